"""The optimizer server: the only program of the optimizer track that runs submitted code.

``python -I optimizer_server.py --source S --hparams JSON --socket PATH`` runs inside the sandbox,
bound there with only rules.py beside it (the standard library and torch, never another runner
module, and never the objective: the trusted parent, runner/opt_server.py, owns the model or
function, the data, the loss, the counters and the budget). It loads the submission, connects to
``PATH`` and serves:

Frames, both ways: a 4-byte little-endian length, then that many bytes of a JSON object.

1. parent → ``{"op": "init", "params": [{"shape": [...], "offset": bytes}], "grads": [offsets],
   "nbytes": N}`` with one file descriptor (SCM_RIGHTS): a shared-memory file of N bytes holding
   every parameter and every gradient as float32, C-contiguous, at those offsets. The child maps
   it and builds its parameters (``torch.nn.Parameter`` views of that memory) with ``.grad`` set
   to the gradient views, then calls ``make_optimizer(params, **hparams)``.
   ``"extras"`` names further regions, one per hook the task offers (``first_layer_stats``:
   n × n, below). child → ``{"op": "ready", "closure": bool, "hooks": [names]}`` (whether
   ``step`` requires a closure; the hooks the optimizer asked for with a ``wants_<hook> = True``
   attribute) or an error frame. Hooks: ``first_layer_stats`` — before each step the runner writes
   XᵀX / b of the first layer's input (X = the unfolded patches of the batch, b = their number,
   n = C_in·k·k; TrAct's statistic) into its region, which the optimizer reads as its attribute
   ``first_layer_stats`` (a float32 n × n tensor).
2. parent → ``{"op": "step", "step": k, "where": "epoch 1, step 3 of 21 (seed 0)"}`` (``where``,
   optional, names the step in messages): the gradients of the current parameters are in the
   shared memory (unless the optimizer asks for closures, when the parent computes nothing in
   advance). The child calls ``optimizer.step()``, or ``optimizer.step(closure)`` where the step
   requires one; each call of the closure is a frame child → ``{"op": "closure"}`` answered
   parent → ``{"op": "loss", "loss": float}`` once the parent has run a forward and backward at
   the parameters now in shared memory (counted against the budget) and written the gradients,
   or parent → ``{"op": "stop"}`` when the budget is spent: the step is abandoned.
   child → ``{"op": "done"}`` (or ``{"op": "stopped"}``) once the parameters in shared memory
   hold the update. The parent then copies them into its own model and checks them: only
   parameters it copied after a counted step are ever scored.
3. parent → ``{"op": "exit"}``.

Any failure: child → ``{"op": "error", "error": {"kind", "message", "repeats"}}`` with a user
error kind (runner/spec.py). The submission shares this process, so it can write anything on the
socket or into the shared memory: the parent treats every frame as hostile, and whatever lands in
the parameters is just the update it scores. Stdout is never read for progress.
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import mmap
import os
import socket
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
FRAME_LENGTH = rules.FRAME_LENGTH
SUBMISSION_MODULE = "submission"
HOOKS = ("first_layer_stats",)
MAX_FRAME_BYTES = rules.MAX_HEADER_BYTES


class Stopped(Exception):
    """The parent answered a closure with "stop": the budget is spent, the step is abandoned."""


# --------------------------------------------------------------------------------------------
# Submitted code's exceptions, classified (runner/sandboxed/rules.py).
# --------------------------------------------------------------------------------------------
def describe_exception(exc: BaseException, filename: str) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
    where = "; ".join(f"line {f.lineno} in {f.name}" for f in frames[-3:])
    text = f"{type(exc).__name__}: {exc}"
    return f"{text} ({where})" if where else text


def call_user(what: str, fn: Callable[[], Any], filename: str) -> Any:
    """Run submitted code; whatever it raises (SystemExit included) becomes a ChildError."""
    try:
        return fn()
    except (ChildError, Stopped):
        raise
    except BaseException as exc:  # noqa: BLE001 - submitted code may raise anything, even SystemExit
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise ChildError(rules.kind_of_exception(exc), f"{what} raised {describe_exception(exc, filename)}"
                         f"{rules.limit_note(exc)}") from exc


# --------------------------------------------------------------------------------------------
# Loading the submission.
# --------------------------------------------------------------------------------------------
def load_module(path: str) -> types.ModuleType:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ChildError(rules.INVALID_ARTIFACT, f"cannot read the submission: {exc}") from exc
    try:
        source = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ChildError(rules.INVALID_ARTIFACT, f"the submission is not UTF-8 text (byte {exc.start}): upload a "
                         "Python source file") from exc
    try:
        code = compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        text = (exc.text or "").strip()
        raise ChildError(rules.INVALID_ARTIFACT, f"syntax error at line {exc.lineno}: {exc.msg}"
                         f"{': ' + text if text else ''}") from exc
    except ValueError as exc:
        raise ChildError(rules.INVALID_ARTIFACT, f"the submission cannot be compiled: {exc}") from exc
    module = types.ModuleType(SUBMISSION_MODULE)
    module.__file__ = path
    sys.modules[SUBMISSION_MODULE] = module
    try:
        call_user("importing the submission", lambda: exec(code, module.__dict__), path)
    except ChildError as exc:
        exc.repeats = exc.repeats or isinstance(exc.__cause__, ImportError)
        raise
    return module


def parse_hparams(text: str) -> dict[str, Any]:
    try:
        hparams = json.loads(text) if text else {}
    except ValueError as exc:
        raise ChildError(rules.BAD_HPARAMS, f"the hyperparameters are not valid JSON: {exc}") from exc
    if not isinstance(hparams, dict):
        raise ChildError(rules.BAD_HPARAMS, f"the hyperparameters must be a JSON object, not {type(hparams).__name__}")
    return hparams


def accepted_names(fn: Callable[..., Any]) -> tuple[list[str], bool]:
    params = list(inspect.signature(fn).parameters.values())[1:]
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def make_user_optimizer(module: types.ModuleType, params: list, hparams: dict[str, Any], filename: str):
    import torch

    factory = getattr(module, "make_optimizer", None)
    if factory is None:
        raise ChildError(rules.INVALID_ARTIFACT, "the file defines no make_optimizer: add a top-level "
                         "`def make_optimizer(params, **hparams)` that returns a torch.optim.Optimizer")
    if not callable(factory):
        raise ChildError(rules.INVALID_ARTIFACT, f"make_optimizer is a {type(factory).__name__}, not a function")
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        try:
            signature.bind(params, **hparams)
        except TypeError as exc:
            names, var_kw = accepted_names(factory)
            accepts = "any keyword (it takes **kwargs)" if var_kw else (", ".join(names) or "no hyperparameters")
            given = ", ".join(sorted(hparams)) or "none"
            raise ChildError(rules.BAD_HPARAMS, f"the hyperparameters ({given}) do not fit make_optimizer{signature}: "
                             f"{exc}. It accepts: {accepts}.") from exc
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
    return optimizer


def needs_closure(optimizer: Any) -> bool:
    """Whether ``optimizer.step`` requires an argument (LBFGS's ``step(closure)``): then every step
    gets a closure; an optional closure (SGD, Adam) is never passed, so those cost one gradient a
    step. Raises rules.INVALID_ARTIFACT for a step that requires more than one argument."""
    try:
        signature = inspect.signature(optimizer.step)
    except (TypeError, ValueError):
        return False
    try:
        signature.bind()
        return False
    except TypeError:  # step() needs an argument: it may be the closure
        pass
    try:
        signature.bind(None)
        return True
    except TypeError:
        raise ChildError(rules.INVALID_ARTIFACT, f"{type(optimizer).__name__}.step{signature} cannot be called as step() "
                         "or step(closure), which is how the runner calls it") from None


# --------------------------------------------------------------------------------------------
# The connection to the parent.
# --------------------------------------------------------------------------------------------
class Connection:
    def __init__(self, path: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        here = os.getcwd()
        os.chdir(os.path.dirname(path))  # a relative name: a socket's path is limited to 107 bytes
        try:
            self.sock.connect(os.path.basename(path))
        finally:
            os.chdir(here)
        self.buffer = bytearray()
        self.fds: list[int] = []

    def send(self, frame: dict[str, Any]) -> None:
        data = json.dumps(frame, separators=(",", ":"), allow_nan=False).encode()
        self.sock.sendall(FRAME_LENGTH.pack(len(data)) + data)

    def _fill(self, size: int) -> None:
        while len(self.buffer) < size:
            data, fds, _, _ = socket.recv_fds(self.sock, 1 << 16, 4)
            self.fds.extend(fds)
            if not data:
                raise EOFError("the runner closed the connection")
            self.buffer += data

    def receive(self) -> dict[str, Any]:
        self._fill(FRAME_LENGTH.size)
        (size,) = FRAME_LENGTH.unpack_from(self.buffer)
        if size > MAX_FRAME_BYTES:
            raise EOFError(f"a frame of {size} bytes from the runner")
        self._fill(FRAME_LENGTH.size + size)
        frame = json.loads(bytes(self.buffer[FRAME_LENGTH.size:FRAME_LENGTH.size + size]))
        del self.buffer[:FRAME_LENGTH.size + size]
        return frame


def shared_tensors(fd: int, nbytes: int, init: dict[str, Any]):
    """The parameters (``nn.Parameter`` views of the shared memory, ``.grad`` set to the gradient
    views) and the raw views, from the init frame's layout."""
    import torch

    memory = mmap.mmap(fd, nbytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    os.close(fd)

    def view(offset: int, shape: list[int]):
        count = math.prod(shape)
        flat = torch.frombuffer(memory, dtype=torch.float32, count=count, offset=offset) if count else \
            torch.empty(0, dtype=torch.float32)
        return flat.view(shape)

    values = [view(p["offset"], p["shape"]) for p in init["params"]]
    grads = [view(offset, p["shape"]) for offset, p in zip(init["grads"], init["params"], strict=True)]
    params = [torch.nn.Parameter(v) for v in values]
    for param, grad in zip(params, grads, strict=True):
        param.grad = grad
    extras = {name: view(entry["offset"], entry["shape"]) for name, entry in init.get("extras", {}).items()}
    return memory, params, values, grads, extras


def serve(conn: Connection, module: types.ModuleType, hparams: dict[str, Any], filename: str) -> None:
    import torch

    init = conn.receive()
    if init.get("op") != "init" or len(conn.fds) != 1:
        raise EOFError("the runner's first frame is not init with one file descriptor")
    memory, params, values, grads, extras = shared_tensors(conn.fds.pop(), int(init["nbytes"]), init)
    optimizer = make_user_optimizer(module, params, hparams, filename)
    closure_wanted = needs_closure(optimizer)
    hooks = [name for name in HOOKS if name in extras and getattr(optimizer, f"wants_{name}", False) is True]
    for name in hooks:
        setattr(optimizer, name, extras[name])  # the runner refreshes it before every step
    conn.send({"op": "ready", "closure": closure_wanted, "hooks": hooks})

    def closure():
        conn.send({"op": "closure"})
        answer = conn.receive()
        if answer.get("op") == "stop":
            raise Stopped()
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad  # the runner wrote the gradients there
        return torch.tensor(float(answer["loss"]), dtype=torch.float32)

    while True:
        frame = conn.receive()
        op = frame.get("op")
        if op == "exit":
            return
        if op != "step":
            raise EOFError(f"an unknown frame from the runner: {op!r}")
        step = int(frame["step"])
        where = str(frame.get("where") or f"step {step}")
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad
        try:
            if closure_wanted:
                call_user(f"optimizer.step(closure) at {where}", lambda: optimizer.step(closure), filename)
            else:
                call_user(f"optimizer.step() at {where}", optimizer.step, filename)
        except Stopped:
            conn.send({"op": "stopped"})
            continue
        for index, (param, value) in enumerate(zip(params, values, strict=True)):
            if param.dtype != torch.float32 or param.shape != value.shape:
                raise ChildError(rules.WRONG_OUTPUT, f"after {where} parameter {index} is {param.dtype} of shape "
                                 f"{tuple(param.shape)}; the optimizer must update it in place")
            if param.data_ptr() != value.data_ptr():  # the optimizer replaced .data: share the new values
                with torch.no_grad():
                    value.copy_(param.detach())
                param.data = value
        conn.send({"op": "done"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="optimizer_server.py", description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True)
    parser.add_argument("--hparams", default="{}")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    conn = None
    try:
        import torch

        torch.manual_seed(args.seed)
        torch.set_num_threads(1)
        conn = Connection(args.socket)
        hparams = parse_hparams(args.hparams)
        filename = os.path.abspath(args.source)
        module = load_module(filename)
        serve(conn, module, hparams, filename)
    except ChildError as exc:
        print(f"{exc.kind}: {exc.message}", file=sys.stderr)
        frame = {"op": "error", "error": exc.doc()}
        try:
            (conn or Connection(args.socket)).send(frame)
        except OSError:  # the runner has gone: nobody is left to tell
            pass
    except (EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        print(f"the connection to the runner ended: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # threads or atexit handlers the submission left neither delay the exit nor get a last word
