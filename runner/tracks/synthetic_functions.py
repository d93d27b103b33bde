"""The diffGrad paper's 1-D functions F1, F2, F3 (tasks opt-f1, opt-f2, opt-f3): the objective the
runner owns on the optimizer track's synthetic tasks (runner/tracks/optimize.py). It never enters
the sandbox: the sandboxed optimizer sees only x and dF/dx (runner/sandboxed/optimizer_server.py).

:func:`optimize_synthetic` runs a submitted optimizer on F in this process, the loop the sandbox
used to run; tests/runner/test_baselines.py compares the sandboxed evaluation with it. The branch
conditions compare in the parameter's dtype (float32).
"""
from __future__ import annotations

import math
import time
from typing import Any

from runner.progress import Progress
from runner.sandboxed import optimizer_loader as loader
from runner.sandboxed import rules
from runner.sandboxed.rules import ChildError


def _below(x, threshold: float) -> bool:
    import torch

    return bool((x <= torch.tensor(threshold, dtype=x.dtype)).all())


def f1(x):
    """F1(x) = (x + 0.3)² for x ≤ 0, (x − 0.2)² + 0.05 for x > 0."""
    return (x + 0.3) ** 2 if _below(x, 0.0) else (x - 0.2) ** 2 + 0.05


def f2(x):
    """F2(x) = −40x − 35.15 for x ≤ −0.9, x³ + x·sin(8x) + 0.85 for x > −0.9."""
    import torch

    return -40 * x - 35.15 if _below(x, -0.9) else x ** 3 + x * torch.sin(8 * x) + 0.85


def f3(x):
    """F3: x² (x ≤ −0.5); 0.75 + x (−0.5 < x ≤ −0.4); −7x/8 (−0.4 < x ≤ 0); 7x/8 (0 < x ≤ 0.4);
    0.75 − x (0.4 < x ≤ 0.5); x² (x > 0.5)."""
    if _below(x, -0.5):
        return x ** 2
    if _below(x, -0.4):
        return 0.75 + x
    if _below(x, 0.0):
        return -7 * x / 8
    if _below(x, 0.4):
        return 7 * x / 8
    if _below(x, 0.5):
        return 0.75 - x
    return x ** 2


SYNTHETIC_FUNCTIONS = {"f1": f1, "f2": f2, "f3": f3}


def synthetic_loss(function: str, x: float) -> float:
    """F(x) evaluated on a float32 parameter, as a Python float (used by the trusted parent too)."""
    import torch

    with torch.no_grad():
        return float(SYNTHETIC_FUNCTIONS[function](torch.tensor([x], dtype=torch.float32)).sum())


def optimize_synthetic(source: str, filename: str, hparams: dict[str, Any], function: str, x0: float, steps: int,
                       seed: int = 0, progress: Progress | None = None) -> dict[str, Any]:
    """Run the submitted optimizer on F from x0; returns {"x": [x0, x1, ..., x_steps]}.

    For each step: zero_grad, loss = F(x) (autograd), backward, step, record x.
    """
    if function not in SYNTHETIC_FUNCTIONS:
        raise ValueError(f"unknown function {function!r}")
    code = loader.compile_source(source, filename)
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    module = loader.exec_module(code, filename)
    param = torch.tensor([x0], dtype=torch.float32, requires_grad=True)
    optimizer = loader.make_user_optimizer(module, [param], hparams, filename)
    fn = SYNTHETIC_FUNCTIONS[function]
    xs = [float(param.detach()[0])]
    every = max(1, steps // 20)
    started = time.perf_counter()
    for step in range(1, steps + 1):
        loader.call_user(f"optimizer.zero_grad() at step {step}", optimizer.zero_grad, filename)
        loss = fn(param).sum()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ChildError(rules.NOT_FINITE, f"the loss is {value} at step {step} (x = {xs[-1]!r})")
        try:
            loss.backward()
        except RuntimeError as exc:
            raise ChildError(rules.RUNTIME_ERROR, f"backward failed at step {step}: {exc}; the optimizer must update "
                             "the parameter in place and leave it a leaf tensor that requires grad") from exc
        loader.call_user(f"optimizer.step() at step {step}", optimizer.step, filename)
        if param.dtype != torch.float32 or param.shape != (1,):
            raise ChildError(rules.WRONG_OUTPUT, f"after step {step} the parameter is {param.dtype} of shape "
                             f"{tuple(param.shape)}; the optimizer must update it in place")
        x = float(param.detach()[0])
        if not math.isfinite(x):
            raise ChildError(rules.NOT_FINITE, f"x became {x} at step {step} (it was {xs[-1]!r} before); "
                             "lower the learning rate or guard the update")
        xs.append(x)
        if progress is not None and (step % every == 0 or step == steps):
            progress(step / steps, f"step {step}/{steps}")
    return {"x": xs, "optimize_s": time.perf_counter() - started}
