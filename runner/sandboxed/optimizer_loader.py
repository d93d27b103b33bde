"""Loading a submitted optimizer file inside the sandbox: read, compile and execute it as the
module ``submission``, parse its hyperparameters, call its ``make_optimizer(params, **hparams)``
and check what it returns. Used by the optimizer server (runner/sandboxed/optimizer_server.py) and
the training program (runner/sandboxed/training.py), bound beside each with rules.py; the runner
imports it too, to run the same checks in tests.

Every failure is a ChildError (runner/sandboxed/rules.py) with a user error kind, a message a
person can act on, and whether it depends only on the submission (it would recur on every other
task: loading, importing, the entry point, the hyperparameters, the optimizer's step signature).
"""
from __future__ import annotations

import inspect
import json
import os
import sys
import traceback
import types
from collections.abc import Callable
from typing import Any

if __package__:  # imported by the runner
    from runner.sandboxed import rules
else:  # in the sandbox: rules.py is bound beside this file (runner/sandboxed/__init__.py)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import rules

ChildError = rules.ChildError
SUBMISSION_MODULE = "submission"


def report_progress(fraction: float, message: str = "") -> None:
    """A progress line on stdout: ``@progress <fraction in 0..1> <message>``."""
    print(f"@progress {max(0.0, min(1.0, fraction)):.4f} {message}", flush=True)


def _user_frames(exc: BaseException, filename: str) -> str:
    """The traceback lines that point into the submission, newest last (at most a few)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
    return "; ".join(f"line {f.lineno} in {f.name}" for f in frames[-3:])


def describe_exception(exc: BaseException, filename: str) -> str:
    where = _user_frames(exc, filename)
    text = f"{type(exc).__name__}: {exc}"
    return f"{text} ({where})" if where else text


def call_user(what: str, fn: Callable[[], Any], filename: str, *,
              passing: tuple[type[BaseException], ...] = ()) -> Any:
    """Run submitted code; whatever it raises (SystemExit included) becomes a ChildError, but a
    ChildError and the caller's own signals (``passing``) go through as they are."""
    try:
        return fn()
    except (ChildError, *passing):
        raise
    except BaseException as exc:  # noqa: BLE001 - submitted code may raise anything, even SystemExit
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise ChildError(rules.kind_of_exception(exc), f"{what} raised {describe_exception(exc, filename)}"
                         f"{rules.limit_note(exc)}") from exc


# --------------------------------------------------------------------------------------------
# Loading a submission.
# --------------------------------------------------------------------------------------------
def load_source(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ChildError(rules.INVALID_ARTIFACT, f"cannot read the submission: {exc}") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ChildError(rules.INVALID_ARTIFACT, f"the submission is not UTF-8 text (byte {exc.start}): upload a "
                         "Python source file") from exc


def compile_source(source: str, filename: str) -> types.CodeType:
    try:
        return compile(source, filename, "exec", dont_inherit=True)
    except SyntaxError as exc:
        text = (exc.text or "").strip()
        shown = f": {text}" if text else ""
        raise ChildError(rules.INVALID_ARTIFACT, f"syntax error at line {exc.lineno}: {exc.msg}{shown}") from exc
    except ValueError as exc:  # e.g. null bytes
        raise ChildError(rules.INVALID_ARTIFACT, f"the submission cannot be compiled: {exc}") from exc


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


def load_module(path: str) -> types.ModuleType:
    """The submission at ``path`` read, compiled and executed as the module ``submission``."""
    return exec_module(compile_source(load_source(path), path), path)


def parse_hparams(text: str) -> dict[str, Any]:
    try:
        hparams = json.loads(text) if text else {}
    except ValueError as exc:
        raise ChildError(rules.BAD_HPARAMS, f"the hyperparameters are not valid JSON: {exc}") from exc
    if not isinstance(hparams, dict):
        raise ChildError(rules.BAD_HPARAMS, f"the hyperparameters must be a JSON object, not {type(hparams).__name__}")
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
        raise ChildError(rules.BAD_HPARAMS, f"the hyperparameters ({given}) do not fit {name}{signature}: {exc}. "
                         f"It accepts: {accepts}.") from exc


def make_user_optimizer(module: types.ModuleType, params: list, hparams: dict[str, Any], filename: str, *,
                        closure_given: bool = False):
    """``module.make_optimizer(params, **hparams)``, checked: a torch.optim.Optimizer holding every
    one of ``params``, whose ``step()`` the loop can call (unless ``closure_given``: the caller
    passes a closure to a step that requires one). Raises ChildError (INVALID_ARTIFACT,
    BAD_HPARAMS, or the kind of what make_optimizer raised)."""
    import torch

    factory = getattr(module, "make_optimizer", None)
    if factory is None:
        raise ChildError(rules.INVALID_ARTIFACT, "the file defines no make_optimizer: add a top-level "
                         "`def make_optimizer(params, **hparams)` that returns a torch.optim.Optimizer")
    if not callable(factory):
        raise ChildError(rules.INVALID_ARTIFACT, f"make_optimizer is a {type(factory).__name__}, not a function")
    check_hparams_fit(factory, params, hparams, "make_optimizer")
    try:
        optimizer = factory(params, **hparams)
    except (TypeError, ValueError) as exc:
        names, var_kw = accepted_names(factory)
        accepts = "any keyword" if var_kw else (", ".join(names) or "none")
        raise ChildError(rules.BAD_HPARAMS, f"make_optimizer(params, **hparams) raised "
                         f"{describe_exception(exc, filename)}; hyperparameters given: {json.dumps(hparams)}; "
                         f"accepted names: {accepts}") from exc
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise ChildError(rules.kind_of_exception(exc), f"make_optimizer raised {describe_exception(exc, filename)}"
                         f"{rules.limit_note(exc)}") from exc
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ChildError(rules.INVALID_ARTIFACT, f"make_optimizer returned {type(optimizer).__name__}, not a "
                         "torch.optim.Optimizer (subclass torch.optim.Optimizer or return a built-in one)")
    owned = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if not all(id(p) in owned for p in params):
        raise ChildError(rules.INVALID_ARTIFACT, "the optimizer make_optimizer returned does not hold the params it "
                         "was given: pass them to the optimizer's constructor")
    if not closure_given:
        check_step_signature(optimizer)
        check_no_hooks(optimizer)
    return optimizer


# runner/sandboxed/optimizer_server.py's hooks
RUNNER_HOOKS = ("first_layer_stats", "next_batch_size", "el2n_scores", "gradient_variance", "grand_scores")


def check_no_hooks(optimizer: Any) -> None:
    """INVALID_ARTIFACT, in one line, when the optimizer asks for a hook (``wants_<hook> = True``)
    that only the runner's loop provides: the training program here does not."""
    wanted = [name for name in RUNNER_HOOKS if getattr(optimizer, f"wants_{name}", False) is True]
    if wanted:
        raise ChildError(rules.INVALID_ARTIFACT, f"{type(optimizer).__name__} wants {', '.join(wanted)}, which only "
                         "the runner's loop provides (training tasks on the CPU); this task's loop runs in the "
                         "sandbox (GPU) and offers no hooks yet")


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
            raise ChildError(rules.INVALID_ARTIFACT, f"{name}.step needs a closure (step(closure) re-evaluates the loss), "
                             "which this task does not provide yet: it calls optimizer.step() with no arguments; "
                             "return an optimizer whose step works without one") from None
        raise ChildError(rules.INVALID_ARTIFACT, f"{name}.step{signature} cannot be called as step(), which is how this "
                         f"task calls it: give {', '.join(required)} a default") from None


def write_doc(path: str, doc: dict[str, Any]) -> None:
    """Write ``doc`` as JSON to ``path`` atomically (a temporary file, then a rename)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(doc, fh, allow_nan=False)
    os.replace(tmp, path)
