"""The program the sandbox runs: ``python -I child.py <subcommand> ...``.

It is bound into the sandbox alone, so it is self-contained: the standard library and torch,
never another runner module. Each subcommand loads the submission, does its work, and writes one
JSON document to ``--out``: ``{"ok": true, ...}`` or ``{"ok": false, "error": {"kind", "message",
"repeats"}}`` with a kind from runner/spec.py's user error kinds, a message a person can act on,
and whether the failure depends only on the submission (it would recur on every other task:
loading, importing, the entry point, the hyperparameters, the optimizer's step signature). The
trusted parent re-derives every metric from what the document holds and trusts none of its numbers.

Progress goes to stdout as lines ``@progress <fraction> <message>``.

Subcommands:
  optimize-synthetic   the diffGrad paper's 1-D functions F1, F2, F3 (opt-f1, opt-f2, opt-f3)
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import sys
import time
import traceback
import types
from collections.abc import Callable
from typing import Any

# Error kinds: the user-error subset of runner/spec.py's ErrorKind (a test keeps them in step).
INVALID_ARTIFACT = "invalid_artifact"
BAD_HPARAMS = "bad_hparams"
RUNTIME_ERROR = "runtime_error"
WRONG_OUTPUT = "wrong_output"
NOT_FINITE = "not_finite"
OUT_OF_MEMORY = "out_of_memory"
SANDBOX_VIOLATION = "sandbox_violation"

SUBMISSION_MODULE = "submission"
# What Python, numpy and torch (CPU and CUDA) say when an allocation fails; kept in step with
# runner/sandbox.py's patterns and runner/model_child.py's list by a test.
MEMORY_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory", "unable to allocate",
                   "failed to allocate", "std::bad_alloc")
# What a thread or process start says at the sandbox's process limit (RLIMIT_NPROC, threads count).
PROCESS_LIMIT_MESSAGES = ("can't start new thread", "resource temporarily unavailable", "pthread_create failed")


class ChildError(Exception):
    """The submission broke the contract; ``kind`` says how. ``repeats``: the failure depends
    only on the submission and its hyperparameters, never on the task's data, so it would recur
    on the submission's other tasks (runner/spec.py failure_repeats)."""

    def __init__(self, kind: str, message: str, repeats: bool = False):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.repeats = repeats or kind in (INVALID_ARTIFACT, BAD_HPARAMS)  # about the file, whatever the task

    def doc(self) -> dict[str, Any]:
        """The ``error`` member of the output document."""
        return {"kind": self.kind, "message": self.message, "repeats": self.repeats}


def report_progress(fraction: float, message: str = "") -> None:
    print(f"@progress {max(0.0, min(1.0, fraction)):.4f} {message}", flush=True)


def _user_frames(exc: BaseException, filename: str) -> str:
    """The traceback lines that point into the submission, newest last (at most a few)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
    return "; ".join(f"line {f.lineno} in {f.name}" for f in frames[-3:])


def describe_exception(exc: BaseException, filename: str) -> str:
    where = _user_frames(exc, filename)
    text = f"{type(exc).__name__}: {exc}"
    return f"{text} ({where})" if where else text


def is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError (numpy's "Unable to allocate ... for an array" is one), torch's OutOfMemoryError
    ("CUDA out of memory") or an allocator's message (torch's "DefaultCPUAllocator: can't
    allocate memory")."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return any(message in text for message in MEMORY_MESSAGES)


def hit_process_limit(exc: BaseException) -> bool:
    """A thread or process that could not start: "can't start new thread", EAGAIN from fork."""
    if isinstance(exc, BlockingIOError) or (isinstance(exc, OSError) and exc.errno == 11):
        return True
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, OSError)) and any(m in text for m in PROCESS_LIMIT_MESSAGES)


def process_limit() -> str:
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    except (ImportError, OSError, ValueError):
        return "the sandbox's limit"
    return "the sandbox's limit" if soft == resource.RLIM_INFINITY else f"the sandbox's limit of {soft}"


def limit_note(exc: BaseException) -> str:
    """What a resource failure means here, to follow the exception's own text ("" for others)."""
    if is_out_of_memory(exc):
        return ""
    if hit_process_limit(exc):
        return (f": the submission started too many processes or threads, past {process_limit()} (threads "
                "included); start fewer")
    return ""


def kind_of_exception(exc: BaseException) -> str:
    """Resource and sandbox failures get their own kind; anything else is the code's own error."""
    if is_out_of_memory(exc):
        return OUT_OF_MEMORY
    if hit_process_limit(exc):
        return SANDBOX_VIOLATION
    if isinstance(exc, (PermissionError, ConnectionError)):
        return SANDBOX_VIOLATION
    if isinstance(exc, OSError) and exc.errno in (1, 11, 13, 24, 27, 30, 101):
        return SANDBOX_VIOLATION
    return RUNTIME_ERROR


def call_user(what: str, fn: Callable[[], Any], filename: str) -> Any:
    """Run submitted code; whatever it raises (SystemExit included) becomes a ChildError."""
    try:
        return fn()
    except ChildError:
        raise
    except BaseException as exc:  # noqa: BLE001 - submitted code may raise anything, even SystemExit
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise ChildError(kind_of_exception(exc), f"{what} raised {describe_exception(exc, filename)}"
                         f"{limit_note(exc)}") from exc


# --------------------------------------------------------------------------------------------
# Loading a submission.
# --------------------------------------------------------------------------------------------
def load_source(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ChildError(INVALID_ARTIFACT, f"cannot read the submission: {exc}") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ChildError(INVALID_ARTIFACT, f"the submission is not UTF-8 text (byte {exc.start}): upload a "
                         "Python source file") from exc


def compile_source(source: str, filename: str) -> types.CodeType:
    try:
        return compile(source, filename, "exec", dont_inherit=True)
    except SyntaxError as exc:
        text = (exc.text or "").strip()
        shown = f": {text}" if text else ""
        raise ChildError(INVALID_ARTIFACT, f"syntax error at line {exc.lineno}: {exc.msg}{shown}") from exc
    except ValueError as exc:  # e.g. null bytes
        raise ChildError(INVALID_ARTIFACT, f"the submission cannot be compiled: {exc}") from exc


def exec_module(code: types.CodeType, filename: str) -> types.ModuleType:
    """Execute the submission as a fresh module named ``submission``."""
    module = types.ModuleType(SUBMISSION_MODULE)
    module.__file__ = filename
    sys.modules[SUBMISSION_MODULE] = module
    try:
        call_user("importing the submission", lambda: exec(code, module.__dict__), filename)
    except ChildError as exc:
        # A package the sandbox lacks is missing for every task; other errors at import time
        # may depend on the device or the moment.
        exc.repeats = exc.repeats or isinstance(exc.__cause__, ImportError)
        raise
    return module


def parse_hparams(text: str) -> dict[str, Any]:
    try:
        hparams = json.loads(text) if text else {}
    except ValueError as exc:
        raise ChildError(BAD_HPARAMS, f"the hyperparameters are not valid JSON: {exc}") from exc
    if not isinstance(hparams, dict):
        raise ChildError(BAD_HPARAMS, f"the hyperparameters must be a JSON object, not {type(hparams).__name__}")
    return hparams


def accepted_names(fn: Callable[..., Any]) -> tuple[list[str], bool]:
    """Keyword names ``fn`` accepts after its first (params) argument, and whether it takes **kwargs."""
    params = list(inspect.signature(fn).parameters.values())[1:]
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def check_hparams_fit(fn: Callable[..., Any], first: Any, hparams: dict[str, Any], name: str) -> None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin without a signature: let the call decide
    try:
        signature.bind(first, **hparams)
    except TypeError as exc:
        names, var_kw = accepted_names(fn)
        accepts = "any keyword (it takes **kwargs)" if var_kw else (", ".join(names) or "no hyperparameters")
        given = ", ".join(sorted(hparams)) or "none"
        raise ChildError(BAD_HPARAMS, f"the hyperparameters ({given}) do not fit {name}{signature}: {exc}. "
                         f"It accepts: {accepts}.") from exc


# --------------------------------------------------------------------------------------------
# Optimizers on the diffGrad synthetic functions (shared/PROTOCOLS.md, "Optimizers").
# The branch conditions compare in the parameter's dtype (float32).
# --------------------------------------------------------------------------------------------
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


def make_user_optimizer(module: types.ModuleType, params: list, hparams: dict[str, Any], filename: str):
    import torch

    factory = getattr(module, "make_optimizer", None)
    if factory is None:
        raise ChildError(INVALID_ARTIFACT, "the file defines no make_optimizer: add a top-level "
                         "`def make_optimizer(params, **hparams)` that returns a torch.optim.Optimizer")
    if not callable(factory):
        raise ChildError(INVALID_ARTIFACT, f"make_optimizer is a {type(factory).__name__}, not a function")
    check_hparams_fit(factory, params, hparams, "make_optimizer")
    try:
        optimizer = factory(params, **hparams)
    except (TypeError, ValueError) as exc:
        names, var_kw = accepted_names(factory)
        accepts = "any keyword" if var_kw else (", ".join(names) or "none")
        raise ChildError(BAD_HPARAMS, f"make_optimizer(params, **hparams) raised "
                         f"{describe_exception(exc, filename)}; hyperparameters given: {json.dumps(hparams)}; "
                         f"accepted names: {accepts}") from exc
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise ChildError(kind_of_exception(exc), f"make_optimizer raised {describe_exception(exc, filename)}"
                         f"{limit_note(exc)}") from exc
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ChildError(INVALID_ARTIFACT, f"make_optimizer returned {type(optimizer).__name__}, not a "
                         "torch.optim.Optimizer (subclass torch.optim.Optimizer or return a built-in one)")
    owned = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if not all(id(p) in owned for p in params):
        raise ChildError(INVALID_ARTIFACT, "the optimizer make_optimizer returned does not hold the params it "
                         "was given: pass them to the optimizer's constructor")
    check_step_signature(optimizer)
    return optimizer


def check_step_signature(optimizer: Any) -> None:
    """INVALID_ARTIFACT, in one line, unless ``optimizer.step()`` can be called without arguments
    as the training loop calls it. LBFGS's step(closure) needs a closure that re-evaluates the
    loss, which the tasks do not provide yet."""
    try:
        signature = inspect.signature(optimizer.step)
    except (TypeError, ValueError):
        return  # no signature to read: the call decides
    try:
        signature.bind()
    except TypeError:
        name = type(optimizer).__name__
        required = [p.name for p in signature.parameters.values()
                    if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if "closure" in required:
            raise ChildError(INVALID_ARTIFACT, f"{name}.step needs a closure (step(closure) re-evaluates the loss), "
                             "which this task does not provide yet: it calls optimizer.step() with no arguments; "
                             "return an optimizer whose step works without one") from None
        raise ChildError(INVALID_ARTIFACT, f"{name}.step{signature} cannot be called as step(), which is how this "
                         f"task calls it: give {', '.join(required)} a default") from None


def optimize_synthetic(source: str, filename: str, hparams: dict[str, Any], function: str, x0: float, steps: int,
                       seed: int = 0, progress: Callable[[float, str], None] | None = None) -> dict[str, Any]:
    """Run the submitted optimizer on F from x0; returns {"x": [x0, x1, ..., x_steps]}.

    For each step: zero_grad, loss = F(x) (autograd), backward, step, record x.
    """
    if function not in SYNTHETIC_FUNCTIONS:
        raise ValueError(f"unknown function {function!r}")
    code = compile_source(source, filename)
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    module = exec_module(code, filename)
    param = torch.tensor([x0], dtype=torch.float32, requires_grad=True)
    optimizer = make_user_optimizer(module, [param], hparams, filename)
    fn = SYNTHETIC_FUNCTIONS[function]
    xs = [float(param.detach()[0])]
    every = max(1, steps // 20)
    started = time.perf_counter()
    for step in range(1, steps + 1):
        call_user(f"optimizer.zero_grad() at step {step}", optimizer.zero_grad, filename)
        loss = fn(param).sum()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ChildError(NOT_FINITE, f"the loss is {value} at step {step} (x = {xs[-1]!r})")
        try:
            loss.backward()
        except RuntimeError as exc:
            raise ChildError(RUNTIME_ERROR, f"backward failed at step {step}: {exc}; the optimizer must update "
                             "the parameter in place and leave it a leaf tensor that requires grad") from exc
        call_user(f"optimizer.step() at step {step}", optimizer.step, filename)
        if param.dtype != torch.float32 or param.shape != (1,):
            raise ChildError(WRONG_OUTPUT, f"after step {step} the parameter is {param.dtype} of shape "
                             f"{tuple(param.shape)}; the optimizer must update it in place")
        x = float(param.detach()[0])
        if not math.isfinite(x):
            raise ChildError(NOT_FINITE, f"x became {x} at step {step} (it was {xs[-1]!r} before); "
                             "lower the learning rate or guard the update")
        xs.append(x)
        if progress is not None and (step % every == 0 or step == steps):
            progress(step / steps, f"step {step}/{steps}")
    return {"x": xs, "optimize_s": time.perf_counter() - started}


# --------------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------------
def _cmd_optimize_synthetic(args: argparse.Namespace) -> dict[str, Any]:
    source = load_source(args.source)
    hparams = parse_hparams(args.hparams)
    out = optimize_synthetic(source, os.path.abspath(args.source), hparams, args.function, args.x0, args.steps,
                             seed=args.seed, progress=report_progress)
    return {"function": args.function, "x0": args.x0, "steps": args.steps, "seed": args.seed, **out}


def _add_optimize_synthetic(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("optimize-synthetic", help="an optimizer on F1, F2 or F3 from x0")
    p.add_argument("--source", required=True, help="the submitted Python file")
    p.add_argument("--hparams", default="{}", help="a JSON object of keyword arguments for make_optimizer")
    p.add_argument("--function", required=True, choices=sorted(SYNTHETIC_FUNCTIONS))
    p.add_argument("--x0", type=float, default=-1.0)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_cmd_optimize_synthetic)


# Later: classify (batches over a pipe), denoise, train-digits, train-cifar.
SUBCOMMANDS = (_add_optimize_synthetic,)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="child.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    for name in sub.choices:
        sub.choices[name].add_argument("--out", required=True, help="where to write the JSON result document")
    return parser


def write_doc(path: str, doc: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(doc, fh, allow_nan=False)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        doc = {"ok": True, **args.run(args)}
    except ChildError as exc:
        doc = {"ok": False, "error": exc.doc()}
        print(f"{exc.kind}: {exc.message}", file=sys.stderr)
    write_doc(args.out, doc)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave at once: threads or atexit handlers the submission left behind neither delay the
    # exit nor get a last chance at the output.
    os._exit(code)
