"""Optimizer track, synthetic functions (opt-f1, opt-f2, opt-f3): a submitted optimizer moves one
float32 parameter from x0 for a fixed number of steps on the diffGrad paper's F1, F2 or F3.

The runner owns the loop (runner/opt_server.py): this process holds x, computes F and dF/dx at
every step, and hands the sandboxed optimizer only the gradient (and, when its step requires a
closure, the loss at the points it asks for); the optimizer hands back the next x. The trajectory
is what this process observed after each counted step, so nothing the submission writes, prints
or reaches inside its sandbox can change its score, only its updates. The functions themselves
are in runner/tracks/synthetic_functions.py.
"""
from __future__ import annotations

import math
import platform
import threading
import time
from pathlib import Path
from typing import Any

import runner
from runner.progress import Progress
from runner.spec import ErrorKind, EvaluationError, JobSpec, make_result
from runner.tracks.synthetic_functions import SYNTHETIC_FUNCTIONS, synthetic_loss

SEED = 0
MEMORY_BYTES = 8 << 30


def task_settings(spec: JobSpec) -> tuple[str, float, int]:
    """(function name ``f1``–``f3``, x0, steps) from the job's params (the slug names the function
    when the params do not). Raises EvaluationError RUNNER_ERROR for an unknown function."""
    params = spec.task.params
    function = str(params.get("function") or spec.task.slug.removeprefix("opt-"))
    if function not in SYNTHETIC_FUNCTIONS:
        raise EvaluationError(ErrorKind.RUNNER_ERROR, f"task {spec.task.slug} names unknown function {function!r}")
    return function, float(params.get("x0", -1.0)), int(params.get("steps", 300))


def evaluate_synthetic(spec: JobSpec, artifact_path: Path, *, work_dir: Path, data_root: Path, trust: bool,
                       device: str, progress: Progress, cancel: threading.Event | None = None) -> dict[str, Any]:
    """The runner owns the loop (runner/opt_server.py): here x is a float32 tensor of shape (1,)
    and F and dF/dx (autograd) are computed at every step; the sandboxed optimizer only turns the
    gradient into the next x. An optimizer whose step requires a closure (LBFGS) gets one: each
    call is an evaluation of F and dF/dx here, at most ``max_evaluations`` (26 per step by
    default: LBFGS's own default is at most 25 per step) in all.

    Takes the job (``spec.task.params``: ``function``, ``x0``, ``steps``, ``max_evaluations``),
    the submitted optimizer file at ``artifact_path`` and a ``work_dir`` for the sandbox's folder;
    ``data_root`` and ``device`` are unused (the CPU always). Returns the result document
    (runner.spec.make_result): ``metrics`` final_x, final_loss, min_loss (F's value, unitless);
    ``curves.trajectory`` step, x, loss from x0 on; ``env``; ``timing`` in seconds and steps/s.
    Raises EvaluationError: the submission's kinds (INVALID_ARTIFACT, BAD_HPARAMS, RUNTIME_ERROR,
    WRONG_OUTPUT, SANDBOX_VIOLATION), NOT_FINITE when x or F(x) stops being finite, TIMEOUT past
    ``spec.task.time_limit_s``, LEASE_EXPIRED when ``cancel`` is set, RUNNER_ERROR for an unknown
    function."""
    import torch

    from runner.opt_server import OptimizerServer

    function, x0, steps = task_settings(spec)
    max_evaluations = int(spec.task.params.get("max_evaluations", 26 * steps))
    fn = SYNTHETIC_FUNCTIONS[function]
    progress(0.02, "starting the sandbox")
    x = torch.tensor([x0], dtype=torch.float32, requires_grad=True)
    xs = [float(x.detach()[0])]
    evaluations = 0
    started = time.perf_counter()
    with OptimizerServer(artifact_path, spec.submission.hparams, work_dir=work_dir,
                         time_limit_s=spec.task.time_limit_s, memory_bytes=MEMORY_BYTES, trust=trust,
                         cancel=cancel, seed=SEED) as server:
        server.start([(1,)])
        shared = server.shared
        shared.values[0].copy_(x.detach())

        def gradients() -> float:
            """F and dF/dx at the x now in shared memory; the gradient goes back there."""
            nonlocal evaluations
            evaluations += 1
            with torch.no_grad():
                x.copy_(shared.values[0])
            x.grad = None
            loss = fn(x).sum()
            loss.backward()
            shared.grads[0].copy_(x.grad)
            return float(loss.detach())

        every = max(1, steps // 20)
        for step in range(1, steps + 1):
            shared.values[0].copy_(torch.tensor([xs[-1]], dtype=torch.float32))  # whatever the child wrote since
            if not server.closure:
                gradients()
            if not server.step(step, gradients, evaluations_left=lambda: evaluations < max_evaluations):
                break  # the budget ran out inside the step: x stays where the last counted step left it
            value = float(shared.values[0][0])  # read once: what the parent observed after this step
            if not math.isfinite(value):
                raise EvaluationError(ErrorKind.NOT_FINITE, f"x became {value} at step {step} (it was {xs[-1]!r} "
                                      "before); lower the learning rate or guard the update", server.log_tail())
            xs.append(value)
            if step % every == 0 or step == steps:
                progress(0.05 + 0.9 * step / steps, f"step {step}/{steps}")
        sandbox = server.sandbox_mode()
    wall_s = time.perf_counter() - started
    progress(0.97, "scoring the trajectory")

    losses = [synthetic_loss(function, x) for x in xs]
    if not all(math.isfinite(v) for v in losses):
        step = next(i for i, v in enumerate(losses) if not math.isfinite(v))
        raise EvaluationError(ErrorKind.NOT_FINITE, f"F({xs[step]}) is not finite at step {step}")
    metrics = {"final_x": xs[-1], "final_loss": losses[-1], "min_loss": min(losses)}
    return make_result(
        spec.task.slug, metrics,
        curves={"trajectory": {"step": list(range(len(xs))), "x": xs, "loss": losses}},
        env={"runner": runner.__version__, "torch": torch.__version__, "python": platform.python_version(),
             "device": "cpu", "sandbox": sandbox, "seeds": [SEED], "function": function, "x0": x0,
             "steps": steps, "dtype": "float32", "gradients": "autograd",
             "min_loss_over": "x0 and every step", "loop": "runner", "closure": server.closure,
             "evaluations": evaluations, "max_evaluations": max_evaluations},
        timing={"wall_s": round(wall_s, 4), "items_per_s": round(steps / max(wall_s, 1e-9), 2)},
    )
