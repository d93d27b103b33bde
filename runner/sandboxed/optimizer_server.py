"""The optimizer server: the only program of the optimizer track that runs submitted code.

``python -I optimizer_server.py --source S --hparams JSON --socket PATH`` runs inside the sandbox,
bound there with only optimizer_loader.py and rules.py beside it (the standard library and torch, never another runner
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
   n × n, below). child → ``{"op": "ready", "closure": bool, "hooks": [names], "wants": [names]}``
   (whether ``step`` requires a closure; the offered hooks the optimizer asked for with a
   ``wants_<hook> = True`` attribute; every hook it asked for, offered or not, so that a task
   offering none can refuse it) or an error frame. ``"offers"`` lists the hooks offered without a region. Hooks:
   ``first_layer_stats`` — before each step the runner writes
   XᵀX / b of the first layer's input (X = the unfolded patches of the batch, b = their number,
   n = C_in·k·k; TrAct's statistic) into its region, which the optimizer reads as its attribute
   ``first_layer_stats`` (a float32 n × n tensor). ``next_batch_size`` (offered) — after each
   step the child reads the optimizer's attribute ``next_batch_size`` (an int, or None for "keep
   the current size") and sends it in its done frame as ``"batch_size"``; the parent checks it
   against the task's bounds. ``el2n_scores`` — two regions of [n_train] float32: ``el2n_scores``
   (the optimizer's attribute of that name), ‖softmax(logits) − onehot(y)‖₂ per training example,
   written by the parent when the optimizer asked (it sets ``request_scores = True`` in a step;
   the child sends ``"scores": true`` with done and resets the attribute), and ``selection`` (the
   attribute ``selection``, 1.0 on every example at the start), which the optimizer writes (nonzero
   = draw this example) and the parent reads each time it draws a new order. ``grand_scores`` —
   the same, with the region ``grand_scores`` (GraNd: ‖∇_w CE(f_w(x), y)‖₂ over all parameters per
   training example) in place of ``el2n_scores``; one request scores every score hook declared,
   and both share the one ``selection``.
   ``gradient_variance`` — one region of [P] float32 (P = every parameter's element count, the
   parameters flat in ``params`` order): before each step the parent writes the unbiased
   per-coordinate variance of the batch's per-sample gradients there; the optimizer reads it as
   its attribute ``gradient_variance``, a list of views shaped like its params (same order), and
   the batch size those gradients came from as ``batch_size_now`` (an int, sent in the step frame).
2. parent → ``{"op": "step", "step": k, "where": "epoch 1, step 3 of 21 (seed 0)"}`` (``where``,
   optional, names the step in messages; ``"batch_size": b`` for an optimizer that wants
   ``gradient_variance``; ``"lr_scale": s``, optional, a finite float ≥ 0, on tasks whose runner
   owns the learning-rate schedule: before the step the child sets ``group["lr"] = base × s`` in
   every param group, ``base`` being the group's ``lr`` when ``make_optimizer`` returned (a group
   added later: its ``lr`` when a step first saw it), so the optimizer's own ``lr`` is the peak of
   the schedule; a group without a numeric ``lr`` is INVALID_ARTIFACT): the gradients of the current parameters are in the
   shared memory (unless the optimizer asks for closures, when the parent computes nothing in
   advance). The child calls ``optimizer.step()``, or ``optimizer.step(closure)`` where the step
   requires one; each call of the closure is a frame child → ``{"op": "closure"}`` answered
   parent → ``{"op": "loss", "loss": float}`` once the parent has run a forward and backward at
   the parameters now in shared memory (counted against the budget) and written the gradients,
   or parent → ``{"op": "stop"}`` when the budget is spent: the step is abandoned.
   child → ``{"op": "done"}`` (with ``"batch_size"`` and ``"scores"`` for those hooks; or
   ``{"op": "stopped"}``) once the parameters in shared memory
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
import types
from typing import Any

if __package__:  # imported by the runner
    from runner.sandboxed import optimizer_loader as loader
    from runner.sandboxed import rules
else:  # in the sandbox: optimizer_loader.py and rules.py are bound beside this file
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import optimizer_loader as loader
    import rules

ChildError = rules.ChildError
FRAME_LENGTH = rules.FRAME_LENGTH
HOOKS = ("first_layer_stats", "next_batch_size", "el2n_scores", "gradient_variance", "grand_scores")
REGIONS = {"el2n_scores": ("el2n_scores", "selection"), "grand_scores": ("grand_scores", "selection")}  # a hook's regions, when not just its own
MAX_FRAME_BYTES = rules.MAX_HEADER_BYTES


class LearningRates:
    """Each param group's base learning rate (its ``lr`` when make_optimizer returned, or, for a
    group added later, when a scheduled step first saw it) and the scaling the runner's schedule
    asks for: ``apply(optimizer, s)`` sets ``group["lr"] = base × s`` (a tensor ``lr`` is filled in
    place). Raises ChildError INVALID_ARTIFACT, at the first scheduled step, for a group whose
    ``lr`` is not a real number or a one-element tensor. Tasks that send no ``lr_scale`` never
    touch the groups."""

    def __init__(self, optimizer: Any) -> None:
        self.bases: list[Any] = [self._copy(group.get("lr")) for group in optimizer.param_groups]

    @staticmethod
    def _copy(lr: Any) -> Any:
        if hasattr(lr, "numel") and hasattr(lr, "item") and lr.numel() == 1:
            return float(lr.item())
        return lr

    @staticmethod
    def _value(lr: Any, index: int) -> float:
        if isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr):
            return float(lr)
        raise ChildError(rules.INVALID_ARTIFACT, f"param group {index} has lr {lr!r}; this task's runner schedules the "
                         "learning rate (a multiple of each group's lr as make_optimizer set it), so every param "
                         "group needs a finite numeric lr")

    def apply(self, optimizer: Any, scale: float) -> None:
        for index, group in enumerate(optimizer.param_groups):
            if index >= len(self.bases):
                self.bases.append(self._copy(group.get("lr")))
            lr = self._value(self.bases[index], index) * scale
            if hasattr(group.get("lr"), "fill_"):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr


class Stopped(Exception):
    """The parent answered a closure with "stop": the budget is spent, the step is abandoned."""


# --------------------------------------------------------------------------------------------
# Loading the submission: runner/sandboxed/optimizer_loader.py, as the training program does.
# --------------------------------------------------------------------------------------------
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


def split_like(flat: Any, values: list[Any]) -> list[Any]:
    """Views of the flat float32 region ``flat`` shaped like each of ``values``, in order."""
    views, at = [], 0
    for value in values:
        count = value.numel()
        views.append(flat[at:at + count].view(value.shape))
        at += count
    return views


def requests(optimizer: Any, hooks: list[str], where: str) -> dict[str, Any]:
    """What the optimizer asks the runner for after a step, through the hooks it declared:
    ``batch_size`` (its ``next_batch_size``, an int; None keeps the size) and ``scores`` (its
    ``request_scores``, reset here). Raises ChildError WRONG_OUTPUT for a size that is not an int."""
    answer: dict[str, Any] = {}
    if "next_batch_size" in hooks:
        size = getattr(optimizer, "next_batch_size", None)
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int):
                raise ChildError(rules.WRONG_OUTPUT, f"after {where} next_batch_size is {size!r} "
                                 f"({type(size).__name__}); it must be an int (or None to keep the batch size)")
            answer["batch_size"] = int(size)
    if ("el2n_scores" in hooks or "grand_scores" in hooks) and getattr(optimizer, "request_scores", False) is True:
        optimizer.request_scores = False
        answer["scores"] = True
    return answer


def serve(conn: Connection, module: types.ModuleType, hparams: dict[str, Any], filename: str) -> None:
    import torch

    init = conn.receive()
    if init.get("op") != "init" or len(conn.fds) != 1:
        raise EOFError("the runner's first frame is not init with one file descriptor")
    memory, params, values, grads, extras = shared_tensors(conn.fds.pop(), int(init["nbytes"]), init)
    optimizer = loader.make_user_optimizer(module, params, hparams, filename, closure_given=True)
    closure_wanted = needs_closure(optimizer)
    offered = set(extras) | set(init.get("offers", []))
    hooks = [name for name in HOOKS if name in offered and getattr(optimizer, f"wants_{name}", False) is True]
    for name in hooks:
        if name == "gradient_variance":  # one flat region, handed over as views shaped like the params
            optimizer.gradient_variance = split_like(extras[name], values)
            continue
        for region in REGIONS.get(name, (name,) if name in extras else ()):
            setattr(optimizer, region, extras[region])  # the runner writes it (the selection: the optimizer)
    wants = [name for name in HOOKS if getattr(optimizer, f"wants_{name}", False) is True]
    learning_rates = LearningRates(optimizer)  # each group's lr as make_optimizer set it: the peak
    conn.send({"op": "ready", "closure": closure_wanted, "hooks": hooks, "wants": wants})

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
        if "gradient_variance" in hooks:
            optimizer.batch_size_now = int(frame["batch_size"])
        if frame.get("lr_scale") is not None:
            scale = float(frame["lr_scale"])
            if not math.isfinite(scale) or scale < 0:
                raise EOFError(f"an lr_scale of {scale} from the runner")
            learning_rates.apply(optimizer, scale)
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad
        try:
            if closure_wanted:
                loader.call_user(f"optimizer.step(closure) at {where}", lambda: optimizer.step(closure), filename,
                                 passing=(Stopped,))
            else:
                loader.call_user(f"optimizer.step() at {where}", optimizer.step, filename, passing=(Stopped,))
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
        conn.send({"op": "done", **requests(optimizer, hooks, where)})


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
        hparams = loader.parse_hparams(args.hparams)
        filename = os.path.abspath(args.source)
        module = loader.load_module(filename)
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
