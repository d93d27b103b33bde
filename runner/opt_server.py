"""The trusted side of the optimizer track: the runner owns the loop, the sandboxed optimizer
server (runner/sandboxed/optimizer_server.py, whose docstring holds the protocol) owns only the
update.

:class:`OptimizerServer` stages the server program and the submission in a folder the sandbox
reads, listens on an AF_UNIX socket there, starts the sandbox in a thread, and shares one memfd
with the child holding every parameter and gradient (float32). Per step the caller writes the
gradients (:meth:`OptimizerServer.step`'s ``gradients`` callback runs a forward and backward at
the parameters now in shared memory, for the step itself or for a closure the optimizer calls),
the child updates the shared parameters, and the caller reads them once the step is done, copies
them into its own tensors and checks they are finite (runner/tracks/optimize.py,
runner/tracks/training/loop.py). The caller's tensors are never shared: what the child does to the
shared memory at any other time reaches nothing the runner scores.

Every frame from the child is hostile input: size-capped, parsed by runner/untrusted.py into a
typed schema; anything else, an error of a kind only the platform may report, or the connection
ending mid-step is the submission's error. Frames are runner/sandboxed/rules.py's (a u32 length,
then a JSON object), read and written by runner/serve/frames.py as for the model server.
"""
from __future__ import annotations

import contextlib
import json
import math
import mmap
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictInt

from runner.host_limits import HostLimitError, lease_user
from runner.sandbox import MODE_BWRAP, MODE_TRUSTED, SandboxResult, run_sandboxed, sandbox_available
from runner.sandboxed import stage
from runner.serve.frames import FrameChannel, PeerGone
from runner.spec import ErrorKind, EvaluationError
from runner.untrusted import Schema, parse, reported_error
from runner.workdir import stage_input_folder

PROGRAM = "optimizer_server.py"  # in runner/sandboxed/
MAX_FRAME_BYTES = 64 << 10  # of a frame from the child: its frames are a few words of JSON
ANSWER = "the optimizer's answer"  # what the child's frames are called in messages
ALIGN = 64
POLL_S = 0.2


HOOKS = ("first_layer_stats", "next_batch_size", "el2n_scores", "gradient_variance", "grand_scores")  # besides gradients
Hook = Literal["first_layer_stats", "next_batch_size", "el2n_scores", "gradient_variance", "grand_scores"]
SCORE_HOOKS = frozenset({"el2n_scores", "grand_scores"})  # scored on request, drawing from one selection


class ReadyFrame(Schema):
    op: Literal["ready"]
    closure: StrictBool = False
    hooks: Annotated[list[Hook], Field(max_length=len(HOOKS))] = []
    wants: Annotated[list[Hook], Field(max_length=len(HOOKS))] = []  # asked for, offered or not


class StepFrame(Schema):
    op: Literal["done", "stopped", "closure"]
    batch_size: StrictInt | None = None  # next_batch_size: the size the optimizer asks for next (unchecked here)
    scores: StrictBool = False  # el2n_scores / grand_scores: the optimizer asks for fresh scores


Gradients = Callable[[], float]  # a forward and backward at the shared parameters; returns the loss


class SharedParameters:
    """One memfd holding ``shapes`` as float32 parameters, then as many gradients, then the
    ``extras`` (name → shape: what hooks hand the optimizer), each C-contiguous at a 64-byte
    aligned offset. ``values[i]``, ``grads[i]`` and ``extras[name]`` are torch views."""

    def __init__(self, shapes: Sequence[Sequence[int]], extras: dict[str, Sequence[int]] | None = None):
        import torch

        self.shapes = [tuple(int(d) for d in shape) for shape in shapes]
        offset = 0
        offsets = []
        extra_shapes = {name: tuple(int(d) for d in shape) for name, shape in (extras or {}).items()}
        for shape in [*self.shapes, *self.shapes, *extra_shapes.values()]:
            offsets.append(offset)
            offset += -(-math.prod(shape) * 4 // ALIGN) * ALIGN
        self.nbytes = max(offset, ALIGN)
        self.fd = os.memfd_create("runner-optimizer", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, self.nbytes)
        self.memory = mmap.mmap(self.fd, self.nbytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        n = len(self.shapes)
        self.offsets, self.grad_offsets = offsets[:n], offsets[n:2 * n]
        self.extra_layout = {name: (shape, at) for (name, shape), at in zip(extra_shapes.items(), offsets[2 * n:],
                                                                             strict=True)}

        def view(at: int, shape: tuple[int, ...]):
            count = math.prod(shape)
            if not count:
                return torch.empty(shape, dtype=torch.float32)
            return torch.frombuffer(self.memory, dtype=torch.float32, count=count, offset=at).view(shape)

        self.values = [view(at, shape) for at, shape in zip(self.offsets, self.shapes, strict=True)]
        self.grads = [view(at, shape) for at, shape in zip(self.grad_offsets, self.shapes, strict=True)]
        self.extras = {name: view(at, shape) for name, (shape, at) in self.extra_layout.items()}

    def layout(self) -> dict[str, Any]:
        return {"params": [{"shape": list(shape), "offset": at} for shape, at in zip(self.shapes, self.offsets,
                                                                                     strict=True)],
                "grads": self.grad_offsets, "nbytes": self.nbytes,
                "extras": {name: {"shape": list(shape), "offset": at} for name, (shape, at) in self.extra_layout.items()}}

    def close(self) -> None:
        self.values = self.grads = []
        self.extras = {}
        with contextlib.suppress(BufferError, ValueError):
            self.memory.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)


def host_sandbox_mode() -> str:
    """The sandbox an optimizer server starts in on this host: ``bwrap`` where bubblewrap works,
    else ``trusted`` (no isolation; refused unless the runner was told to trust submissions)."""
    return MODE_BWRAP if sandbox_available().available else MODE_TRUSTED


class OptimizerServer:
    """The sandboxed optimizer of one run. Use as a context manager; raises EvaluationError with
    the submission's kind for anything its child does wrong, TIMEOUT past ``deadline`` (a
    ``time.monotonic()`` value: the job's, when several servers share its time limit; default now +
    ``time_limit_s``, the sandbox's own limit) and LEASE_EXPIRED when ``cancel`` is set."""

    def __init__(self, artifact: Path, hparams: dict[str, Any], *, work_dir: Path, time_limit_s: float,
                 memory_bytes: int, trust: bool, cancel: threading.Event | None = None, seed: int = 0,
                 threads: int = 1, deadline: float | None = None, ro_binds: Sequence[Any] = ()):
        self.artifact, self.hparams, self.work_dir = Path(artifact), hparams, Path(work_dir)
        self.time_limit_s, self.memory_bytes, self.trust = time_limit_s, memory_bytes, trust
        self.cancel, self.seed, self.threads = cancel, seed, threads
        self.ro_binds = list(ro_binds)  # besides the input folder: say, empty folders laid over package data
        self.deadline = deadline if deadline is not None else time.monotonic() + time_limit_s
        self.closure = False
        self.hooks: set[str] = set()
        self.wants: set[str] = set()  # every hook the optimizer asked for, offered or not
        self.batch_size_request: int | None = None  # the last step's, when the optimizer set next_batch_size
        self.scores_request = False  # whether the last step asked for fresh el2n_scores / grand_scores
        self.shared: SharedParameters | None = None
        self.result: SandboxResult | None = None
        self._error: BaseException | None = None
        self._kill = threading.Event()
        self._thread: threading.Thread | None = None
        self._channel: FrameChannel | None = None
        self._lease = contextlib.ExitStack()

    # -- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> OptimizerServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def start(self, shapes: Sequence[Sequence[int]], extras: dict[str, Sequence[int]] | None = None,
              offers: Sequence[str] = ()) -> None:
        """Start the child, share parameters of ``shapes`` with it (write their initial values to
        ``self.shared.values`` before the first step) and wait until its optimizer is built.
        ``extras`` are the hooks' regions this task can fill (``first_layer_stats``: n × n;
        ``el2n_scores`` and ``grand_scores``: [n_train] float32 each, sharing ``selection``: [n_train] float32;
        ``gradient_variance``: [number of parameters], flat in the order of ``shapes``); ``offers`` the
        hooks offered without a region of their own (``next_batch_size``). ``self.hooks`` then
        says which of them the optimizer asked for."""
        io = stage_input_folder(self.work_dir, {"submission.py": self.artifact})
        child, source = stage(PROGRAM, io), io / "submission.py"
        address = str(io / "server.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        folder = os.open(io, os.O_PATH | os.O_DIRECTORY)
        try:
            # Through the folder's descriptor: a socket's path is limited to 107 bytes, job folders are not.
            listener.bind(f"/proc/self/fd/{folder}/server.sock")
            os.chmod(address, 0o600)
            try:
                user = self._lease.enter_context(lease_user())
            except HostLimitError as exc:
                raise EvaluationError(ErrorKind.SANDBOX_UNAVAILABLE, f"no sandbox uid for the optimizer: {exc}") from exc
            if os.geteuid() == 0:
                os.chown(address, user.uid, -1)
            listener.listen(1)
            listener.settimeout(POLL_S)
            argv = [sys.executable, "-I", str(child), "--source", str(source), "--socket", address,
                    "--hparams", json.dumps(self.hparams), "--seed", str(self.seed)]
            env = {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}

            def run() -> None:
                try:
                    self.result = run_sandboxed(argv, scratch=self.work_dir / "scratch", ro_binds=[io, *self.ro_binds],
                                                time_limit_s=self.time_limit_s, memory_bytes=self.memory_bytes,
                                                trust=self.trust, env=env, cancel=self._kill, user=user)
                except BaseException as exc:  # noqa: BLE001 - raised again by the waiting thread
                    self._error = exc

            self._thread = threading.Thread(target=run, name="runner-optimizer", daemon=True)
            self._thread.start()
            while True:
                try:
                    sock, _ = listener.accept()
                    break
                except TimeoutError:
                    self._check("starting the optimizer")
        finally:
            listener.close()
            os.close(folder)
            with contextlib.suppress(OSError):
                os.unlink(address)
        self._channel = FrameChannel(sock, what=ANSWER, max_header_bytes=MAX_FRAME_BYTES, poll_s=POLL_S)
        self.shared = SharedParameters(shapes, extras)
        self._send({"op": "init", **self.shared.layout(), "offers": list(offers)}, fds=(self.shared.fd,))
        frame = self._receive("building the optimizer")
        ready = parse(ReadyFrame, frame, what="the optimizer's ready answer", log_tail=self.log_tail())
        self.closure = ready.closure
        self.hooks = set(ready.hooks) & (set(self.shared.extras) | set(offers))
        self.wants = set(ready.wants) | self.hooks

    def close(self) -> None:
        if self._channel is not None and self._thread is not None and self._thread.is_alive():
            with contextlib.suppress(OSError):
                self._send({"op": "exit"})
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive():
                self._kill.set()
                self._thread.join(timeout=30)
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.shared is not None:
            self.shared.close()
            self.shared = None
        self._lease.close()

    def log_tail(self) -> str:
        return self.result.log_tail if self.result is not None else ""

    def sandbox_mode(self) -> str:
        """The sandbox the child ran in (``bwrap`` or ``trusted``, runner/sandbox.py); before it
        has ended, the one this host would run it in."""
        return self.result.mode if self.result is not None else host_sandbox_mode()

    # -- the loop ---------------------------------------------------------------------------
    def step(self, step: int, gradients: Gradients, *, evaluations_left: Callable[[], bool],
             where: str = "", batch_size: int | None = None, lr_scale: float | None = None) -> bool:
        """One optimizer step: the caller has written the gradients at the current parameters
        into ``shared.grads`` (unless ``self.closure``); each closure the optimizer calls runs
        ``gradients()`` while ``evaluations_left()``. Returns False when the step was abandoned
        because the budget ran out (the parameters are then not to be collected). After a done
        step, ``batch_size_request`` and ``scores_request`` hold what the optimizer asked for
        (only from the hooks it declared; the caller checks the size against its bounds).
        ``batch_size`` (examples the gradients were computed on) goes to an optimizer that wants
        ``gradient_variance``, as its ``batch_size_now``. ``lr_scale`` (a finite float ≥ 0, on tasks
        whose runner owns the learning-rate schedule) makes the child set every param group's
        ``lr`` to its base (the ``lr`` make_optimizer gave it) times ``lr_scale`` before the step."""
        extra = {"batch_size": batch_size} if batch_size is not None and "gradient_variance" in self.hooks else {}
        if lr_scale is not None:
            if not (math.isfinite(lr_scale) and lr_scale >= 0):
                raise ValueError(f"lr_scale must be a finite number >= 0, not {lr_scale}")
            extra["lr_scale"] = float(lr_scale)
        self._send({"op": "step", "step": step, "where": where, **extra})
        self.batch_size_request, self.scores_request = None, False
        while True:
            frame = parse(StepFrame, self._receive(f"optimizer step {where or step}"), what=ANSWER,
                          log_tail=self.log_tail())
            if frame.op == "done":
                if "next_batch_size" in self.hooks:
                    self.batch_size_request = frame.batch_size
                self.scores_request = bool(self.hooks & SCORE_HOOKS) and frame.scores
                return True
            if frame.op == "stopped":
                return False
            if not evaluations_left():
                self._send({"op": "stop"})
                continue
            self._send({"op": "loss", "loss": float(gradients())})

    # -- frames -------------------------------------------------------------------------------
    def _send(self, frame: dict[str, Any], fds: tuple[int, ...] = ()) -> None:
        assert self._channel is not None
        try:
            self._channel.send(frame, fds)
        except PeerGone as exc:
            self._receive("receiving the runner's frame")  # the child's error frame, when it left one
            raise self._ended("receiving the runner's frame") from exc

    def _receive(self, what: str) -> dict[str, Any]:
        assert self._channel is not None
        try:
            frame = self._channel.receive(lambda: self._check(what))
        except PeerGone as exc:
            raise self._ended(what) from exc
        if frame.get("op") == "error":
            raise reported_error(frame.get("error"), what=ANSWER, log_tail=self._wait_tail())
        return frame

    def _wait_tail(self) -> str:
        """The log tail once the child has ended (it exits right after reporting an error)."""
        if self._thread is not None:
            self._thread.join(timeout=5)
        return self.log_tail()

    def _check(self, what: str) -> None:
        if self.cancel is not None and self.cancel.is_set():
            self._kill.set()
            raise EvaluationError(ErrorKind.LEASE_EXPIRED, "stopped: the site took the job back")
        if time.monotonic() > self.deadline + 5:
            self._kill.set()
            raise EvaluationError(ErrorKind.TIMEOUT, f"ran past the task's time limit of {self.time_limit_s:g} s "
                                  f"while {what} and was stopped", self.log_tail())
        if self._thread is not None and not self._thread.is_alive():
            raise self._ended(what)

    def _ended(self, what: str) -> EvaluationError:
        """What the child's end amounts to, once it ended (or closed its side) while ``what``."""
        if self._thread is not None:
            self._thread.join(timeout=15)
            if self._thread.is_alive():
                self._kill.set()
                self._thread.join(timeout=30)
        if self._error is not None:
            if isinstance(self._error, EvaluationError):
                return self._error
            raise self._error
        result = self.result
        if result is not None:
            failure = result.failure()
            if failure is not None:
                return failure
        return EvaluationError(ErrorKind.RUNTIME_ERROR, f"the optimizer ended while {what}: did the submission exit "
                               "the process or close the runner's connection?", self.log_tail())
