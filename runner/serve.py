"""The parent side of the sandboxed model server (the child is runner/model_child.py, whose
docstring holds the protocol).

A :class:`ModelServer` starts the child once through ``run_sandboxed`` (the artifact and the child
bound read-only), listens on an AF_UNIX socket in a folder the sandbox sees read-only, hands the
child a shared-memory ring (a memfd) and streams batches through it: while the child computes one
slot the parent fills the next. Labels never leave this process. Everything the child answers is
checked here: frame sizes, shapes and dtypes; the tracks check the output contract and compute
the metrics.

Warm servers. A worker process keeps the server of its last submission in :data:`POOL`, keyed by
the artifact's sha256 and the settings it was started with, so the next job of the same submission
(Celery prefork processes outlive their tasks) skips loading the model. An idle server is closed
after ``RUNNER_MODEL_IDLE_S`` seconds (default 300); starting a server for another key first
closes idle ones, so a GPU holds one submission's model at a time.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import mmap
import os
import queue
import shutil
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from runner.host_limits import HostLimitError, SandboxUser, host_memory_bytes, lease_user
from runner.sandbox import DEFAULT_MAX_PROCESSES, GiB, SandboxResult, run_sandboxed
from runner.sandboxed import model_server as model_child
from runner.sandboxed import stage
from runner.spec import ErrorKind, EvaluationError
from runner.untrusted import Schema, load_json, parse, printable, reported_error, tampered
from runner.workdir import LockedFolder

log = logging.getLogger(__name__)

FRAME_LENGTH = struct.Struct("<I")
MAX_HEADER_BYTES = 1 << 20
MAX_INLINE_BYTES = 256 << 20  # an output that does not fit its slot comes inline, up to this
SLOTS = 2  # one batch computing in the child while the parent fills the next
POLL_S = 0.2
_WIRE_DTYPES = {
    "float32": np.float32,
    "float64": np.float64,
    "float16": np.float16,
    "uint8": np.uint8,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "bool": np.bool_,
}

# --------------------------------------------------------------------------------------------
# What the child may answer (runner/model_child.py's protocol), as typed schemas: the model
# server runs submitted code, so every frame is hostile until it fits one of these.
# --------------------------------------------------------------------------------------------
Scalar = StrictStr | StrictBool | StrictInt | StrictFloat | None
Count = Annotated[int, Field(ge=0)]
Seconds = Annotated[float, Field(ge=0)]
Dimension = Annotated[int, Field(ge=1)] | None


class ReadyFrame(Schema):
    """Sent once the model loaded; the fields the tracks read are typed, any other must be a
    plain value (kept in ``info`` for the result's environment)."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    op: Literal["ready"]
    protocol: StrictInt = 0
    load_s: Seconds = 0.0
    inputs: Annotated[int, Field(ge=0, le=64)] = 1
    attributes: dict[StrictStr, Scalar] = {}
    providers: list[StrictStr] = []
    # What the artifact says about its inputs (runner/model_child.py): None for a dynamic
    # dimension, or for a format that keeps no shapes; the batch sizes the child fits batches to.
    input_shapes: Annotated[list[Annotated[list[Dimension], Field(max_length=8)] | None], Field(max_length=64)] | None = None
    input_dtypes: Annotated[list[Annotated[StrictStr, Field(max_length=32)] | None], Field(max_length=64)] = []
    batch_min: Annotated[int, Field(ge=1)] = 1
    batch_max: Annotated[int, Field(ge=1)] | None = None

    def info(self) -> dict[str, Any]:
        fixed = {name: getattr(self, name) for name in type(self).model_fields if name != "op"}
        extra = {k: v for k, v in (self.model_extra or {}).items()
                 if len(k) <= 64 and (v is None or isinstance(v, (str, bool, int, float)))}
        return {**extra, **fixed}


class OutFrame(Schema):
    op: Literal["out"]
    id: StrictInt
    shape: Annotated[list[Count], Field(max_length=8)]
    dtype: StrictStr
    where: Literal["shm", "inline"]
    nbytes: Count
    compute_s: Seconds = 0.0
    info: dict[StrictStr, Scalar] = {}


class BenchFrame(Schema):
    op: Literal["bench"]
    items_per_s: Seconds


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name) or default)
    except ValueError:
        return default


def default_memory_bytes() -> int:
    """The model server's memory limit in bytes: ``RUNNER_MODEL_MEMORY_GB`` where set, else half the
    host's memory (/proc/meminfo), and at least 6 GiB since torch needs 4 GiB of address space just
    to import."""
    configured = _env_float("RUNNER_MODEL_MEMORY_GB", 0)
    if configured > 0:
        return int(configured * GiB)
    return max(6 * GiB, host_memory_bytes() // 2)


def default_threads(device: str) -> int:
    """CPU threads of the model server: RUNNER_CPU_THREADS, else the cores (at most 16) on CPU, 4
    beside a GPU (onnxruntime and host work)."""
    configured = os.environ.get("RUNNER_CPU_THREADS")
    if configured and configured.isdigit() and int(configured) > 0:
        return int(configured)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 16)) if not device.startswith("cuda") else min(4, max(1, cores))


@dataclass(frozen=True)
class ServerSettings:
    """What a server is started with; two jobs share a warm server only when these agree."""

    sha256: str
    fmt: str
    device: str = "cpu"
    precision: str = "fp32"
    channels_last: str = "auto"
    trust: bool = False
    threads: int = 0

    def __post_init__(self) -> None:
        if self.precision not in model_child.PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(model_child.PRECISIONS)}")
        if self.channels_last not in model_child.CHANNELS_LAST:
            raise ValueError("channels_last must be auto, on or off")


@dataclass
class StreamStats:
    """What one stream did: items answered, seconds in the child's forward passes (as it reports
    them), out-of-memory retries and the batch size it ended with."""

    compute_s: float = 0.0
    oom_retries: int = 0
    max_items: int = 0
    first_output_at: float | None = None
    last_output_at: float | None = None
    items_after_first: int = 0

    def record(self, items: int, compute_s: float) -> None:
        """An answered chunk of ``items``: its arrival time and the child's compute time."""
        now = time.perf_counter()
        if self.first_output_at is None:
            self.first_output_at = now
        else:
            self.items_after_first += items
        self.last_output_at = now
        self.compute_s += compute_s


@dataclass
class _Chunk:
    tag: Any
    lo: int
    hi: int
    inputs: list[Any]

    @property
    def size(self) -> int:
        return self.hi - self.lo


@dataclass
class _Slot:
    index: int
    offset: int = 0
    size: int = 0
    chunk: _Chunk | None = None
    ident: int = 0
    out_offset: int = 0
    out_capacity: int = 0


@dataclass
class _Ring:
    fd: int
    region: mmap.mmap
    slot_bytes: int
    slots: list[_Slot] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Input encoding.
# --------------------------------------------------------------------------------------------
def as_inputs(inputs: Any) -> list[Any]:
    return list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]


def _nbytes(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return value.nbytes
    return int(value.numel() * value.element_size())  # a torch tensor


def _quantized_uint8(tensor: Any) -> Any | None:
    """A GPU batch whose values are exactly k/255 travels as uint8 (a quarter of the bytes); the
    child divides by 255 in float32 and gets the same values back. None when it is not exact."""
    import torch

    if tensor.dtype != torch.float32:
        return None
    q = tensor.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return q if torch.equal(q.float().div_(255.0), tensor) else None


def _write_input(region: mmap.mmap, offset: int, value: Any) -> dict[str, Any]:
    """Copy one input into shared memory at ``offset``; returns its description for the child."""
    scale = None
    if not isinstance(value, np.ndarray):  # a torch tensor, possibly on the GPU
        import torch

        if value.is_cuda:
            quantized = _quantized_uint8(value)
            if quantized is not None:
                value, scale = quantized, 255.0
        if value.dtype not in (torch.float32, torch.uint8):
            value = value.float()
        target = np.ndarray(
            tuple(value.shape),
            dtype=np.uint8 if value.dtype == torch.uint8 else np.float32,
            buffer=region,
            offset=offset,
        )
        torch.from_numpy(target).copy_(value)
        dtype, shape = str(target.dtype), list(target.shape)
    else:
        source = value if value.dtype in (np.float32, np.uint8) else value.astype(np.float32)
        target = np.ndarray(source.shape, dtype=source.dtype, buffer=region, offset=offset)
        np.copyto(target, source)
        dtype, shape = str(target.dtype), list(target.shape)
    del target
    return {"offset": offset, "shape": shape, "dtype": dtype, "scale": scale}


def _slice(value: Any, lo: int, hi: int) -> Any:
    return value[lo:hi]


# --------------------------------------------------------------------------------------------
# Prefetching.
# --------------------------------------------------------------------------------------------
_DONE = object()


def prefetch(items: Iterable[Any], depth: int = 2, stop: threading.Event | None = None) -> Iterator[Any]:
    """Iterate ``items`` in a background thread, up to ``depth`` ahead, so preparing the next batch
    (decoding, slicing) overlaps the model's work on this one. Exceptions surface here."""
    buffer: queue.Queue = queue.Queue(maxsize=max(1, depth))
    halt = stop or threading.Event()
    failure: list[BaseException] = []

    def fill() -> None:
        try:
            for item in items:
                while not halt.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if halt.is_set():
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            failure.append(exc)
        finally:
            while not halt.is_set():
                try:
                    buffer.put(_DONE, timeout=0.1)
                    break
                except queue.Full:
                    continue

    thread = threading.Thread(target=fill, name="runner-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                if failure:
                    raise failure[0]
                return
            yield item
    finally:
        halt.set()
        thread.join(timeout=5)


# --------------------------------------------------------------------------------------------
# The server.
# --------------------------------------------------------------------------------------------
class ModelServer:
    """One sandboxed model server. ``start`` loads the model; ``stream`` answers batches; ``close``
    stops it. Not thread-safe: one stream at a time."""

    def __init__(
        self,
        artifact: Path | str,
        settings: ServerSettings,
        *,
        lifetime_s: float | None = None,
        memory_bytes: int | None = None,
        work_root: str | None = None,
    ):
        self.artifact = Path(artifact)
        self.settings = settings
        self.lifetime_s = lifetime_s or _env_float("RUNNER_MODEL_SERVER_LIFETIME_S", 12 * 3600)
        self.memory_bytes = memory_bytes or default_memory_bytes()
        self.threads = settings.threads or default_threads(settings.device)
        self.work_root = work_root or os.environ.get("RUNNER_WORK_DIR") or None
        self.info: dict[str, Any] = {}
        self.started_at: float | None = None
        self.jobs = 0
        self._dir: Path | None = None
        self._folder: LockedFolder | None = None
        self._listener: socket.socket | None = None
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        self._ring: _Ring | None = None
        self._next_id = 0
        self._kill = threading.Event()
        self._lease = contextlib.ExitStack()  # the uid this server's sandbox runs as, held until close
        self._user: SandboxUser | None = None
        self._thread: threading.Thread | None = None
        self._result: SandboxResult | None = None
        self._thread_error: BaseException | None = None
        self._log: deque[str] = deque(maxlen=50)
        self.broken = False

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return (
            self._thread is not None
            and self._thread.is_alive()
            and self._sock is not None
            and not self.broken
            and not self._kill.is_set()
        )

    def lifetime_left(self) -> float:
        if self.started_at is None:
            return 0.0
        return self.lifetime_s - (time.monotonic() - self.started_at)

    def _stage(self) -> tuple[Path, Path, Path]:
        self._folder = LockedFolder("runner-model-", self.work_root)
        self._dir = self._folder.path
        self._dir.chmod(0o711)  # traversable, not listable
        io = self._dir / "io"
        io.mkdir(mode=0o755)
        io.chmod(0o755)
        child, model = stage("model_server.py", io), io / "model"
        shutil.copyfile(self.artifact, model)
        model.chmod(0o644)
        return io, child, model

    def start(
        self, *, deadline: float | None = None, cancel: threading.Event | None = None
    ) -> dict[str, Any]:
        """Start the sandboxed child, wait for it to load the model, return what it reports.
        Raises EvaluationError (INVALID_ARTIFACT for a file that does not load, OUT_OF_MEMORY,
        TIMEOUT, SANDBOX_UNAVAILABLE, ...)."""
        s = self.settings
        io, child, model = self._stage()
        address = str(io / "server.sock")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(address)
        os.chmod(address, 0o600)
        try:
            self._user = self._lease.enter_context(lease_user())
        except HostLimitError as exc:
            self.close(kill=True)
            raise EvaluationError(ErrorKind.SANDBOX_UNAVAILABLE, f"no sandbox uid for the model server: {exc}") from exc
        if os.geteuid() == 0:
            os.chown(address, self._user.uid, -1)  # the sandbox's unprivileged user may connect
        self._listener.listen(1)
        self._listener.settimeout(POLL_S)
        argv = [
            sys.executable,
            "-I",
            str(child),
            "--artifact",
            str(model),
            "--format",
            s.fmt,
            "--socket",
            address,
            "--device",
            s.device,
            "--precision",
            s.precision,
            "--channels-last",
            s.channels_last,
            "--threads",
            str(self.threads),
        ]
        env = {
            "OMP_NUM_THREADS": str(self.threads),
            "MKL_NUM_THREADS": str(self.threads),
            "TORCH_FORCE_WEIGHTS_ONLY_LOAD": "1",
        }
        if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
            env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
        on_gpu = s.device.startswith("cuda")

        def run() -> None:
            try:
                self._result = run_sandboxed(
                    argv,
                    scratch=self._dir / "scratch",
                    ro_binds=[io],
                    time_limit_s=self.lifetime_s,
                    memory_bytes=self.memory_bytes,
                    trust=s.trust,
                    gpu=on_gpu,
                    cpu_time_s=int(self.lifetime_s * self.threads) + 60,
                    max_processes=max(DEFAULT_MAX_PROCESSES, 4 * self.threads + 64),
                    env=env,
                    cancel=self._kill,
                    on_stdout_line=self._log.append,
                    user=self._user,
                )
            except BaseException as exc:  # noqa: BLE001 - re-raised by the waiting thread
                self._thread_error = exc

        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=run, name="runner-model-server", daemon=True)
        self._thread.start()
        try:
            self._accept(deadline, cancel)
            header, _ = self._receive(deadline, cancel, what="loading the model")
        except BaseException:
            self.close(kill=True)
            raise
        try:
            if header.get("op") == "error":
                raise self._child_error(header, "loading the model")
            if header.get("op") != "ready":
                raise tampered("the model server's first answer", "not \"ready\" nor \"error\"", self.log_tail())
            ready = parse(ReadyFrame, header, what="the model server's ready answer", log_tail=self.log_tail())
        except EvaluationError:
            self.close(kill=True)
            raise
        self.info = ready.info()
        self.info["sandbox"] = self._sandbox_mode()
        log.info(
            "model server up: %s on %s in %.1f s (%s)",
            s.fmt,
            self.info.get("device"),
            float(self.info.get("load_s") or 0),
            self.info["sandbox"],
        )
        return self.info

    def _sandbox_mode(self) -> str:
        from runner.sandbox import MODE_BWRAP, MODE_TRUSTED, sandbox_available

        return MODE_BWRAP if sandbox_available().available else MODE_TRUSTED

    def _accept(self, deadline: float | None, cancel: threading.Event | None) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
                break
            except TimeoutError:
                self._check_waiting(deadline, cancel, "starting the model server")
        self._listener.close()
        self._listener = None
        with contextlib.suppress(OSError):
            os.unlink(self._dir / "io" / "server.sock")  # nobody else may connect
        sock.settimeout(POLL_S)
        self._sock = sock

    def close(self, *, kill: bool = False) -> None:
        """Stop the child (politely unless ``kill``), wait for the sandbox to end, remove its folder."""
        self.broken = True
        if self._sock is not None and not kill and self._thread is not None and self._thread.is_alive():
            with contextlib.suppress(OSError):
                self._send({"op": "exit"})
        if self._thread is not None:
            self._thread.join(timeout=0 if kill else 10)
            if self._thread.is_alive():
                self._kill.set()
                self._thread.join(timeout=30)
        else:
            self._kill.set()
        for handle in (self._sock, self._listener):
            if handle is not None:
                with contextlib.suppress(OSError):
                    handle.close()
        self._sock = self._listener = None
        self._drop_ring()
        if self._folder is not None:
            self._folder.close()  # whatever the sandbox left in its scratch (runner/workdir.py)
            self._folder = self._dir = None
        self._lease.close()
        self._user = None

    # -- frames -----------------------------------------------------------------------------
    def _send(self, header: dict[str, Any], fds: tuple[int, ...] = ()) -> None:
        assert self._sock is not None
        head = json.dumps(header, separators=(",", ":")).encode()
        data = FRAME_LENGTH.pack(len(head)) + head
        self._sock.settimeout(None)
        try:
            if fds:
                sent = socket.send_fds(self._sock, [data], list(fds))
                if sent < len(data):
                    self._sock.sendall(data[sent:])
            else:
                self._sock.sendall(data)
        except OSError as exc:
            raise self._died("sending a batch") from exc
        finally:
            self._sock.settimeout(POLL_S)

    def _check_waiting(self, deadline: float | None, cancel: threading.Event | None, what: str) -> None:
        if cancel is not None and cancel.is_set():
            self.close(kill=True)
            raise EvaluationError(ErrorKind.LEASE_EXPIRED, "stopped: the site took the job back")
        if deadline is not None and time.monotonic() > deadline:
            self.close(kill=True)
            raise EvaluationError(
                ErrorKind.TIMEOUT,
                f"ran past the task's time limit while {what} and was stopped",
                self.log_tail(),
            )
        if self._thread is not None and not self._thread.is_alive():
            raise self._died(what)

    def _fill(self, size: int, deadline: float | None, cancel: threading.Event | None, what: str) -> None:
        assert self._sock is not None
        while len(self._buffer) < size:
            try:
                chunk = self._sock.recv(max(65536, min(size - len(self._buffer), 16 << 20)))
            except TimeoutError:
                self._check_waiting(deadline, cancel, what)
                continue
            except OSError as exc:
                raise self._died(what) from exc
            if not chunk:
                raise self._died(what)
            self._buffer += chunk

    def _receive(
        self, deadline: float | None, cancel: threading.Event | None, *, what: str
    ) -> tuple[dict[str, Any], bytes | None]:
        """The next frame: (header, inline payload or None)."""
        self._fill(FRAME_LENGTH.size, deadline, cancel, what)
        (size,) = FRAME_LENGTH.unpack_from(self._buffer)
        if size > MAX_HEADER_BYTES:
            self.broken = True
            raise tampered("the model server's answer", f"{size} bytes, over the limit of {MAX_HEADER_BYTES}")
        self._fill(FRAME_LENGTH.size + size, deadline, cancel, what)
        try:
            header = load_json(bytes(self._buffer[FRAME_LENGTH.size : FRAME_LENGTH.size + size]),
                               what="the model server's answer", max_bytes=MAX_HEADER_BYTES)
            if not isinstance(header, dict):
                raise tampered("the model server's answer", "not a JSON object")
        except EvaluationError:
            self.broken = True
            raise
        del self._buffer[: FRAME_LENGTH.size + size]
        payload = None
        if header.get("op") == "out" and header.get("where") == "inline":
            nbytes = header.get("nbytes")
            if not isinstance(nbytes, int) or nbytes < 0 or nbytes > MAX_INLINE_BYTES:
                self.broken = True
                raise EvaluationError(
                    ErrorKind.WRONG_OUTPUT,
                    f"the model returned {nbytes} bytes for one batch, "
                    f"over the limit of {MAX_INLINE_BYTES}; shape {header.get('shape')}",
                )
            self._fill(nbytes, deadline, cancel, what)
            payload = bytes(self._buffer[:nbytes])
            del self._buffer[:nbytes]
        return header, payload

    def _died(self, what: str) -> EvaluationError:
        """The error a child that stopped answering amounts to (its sandbox result classifies it)."""
        self.broken = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        if self._thread_error is not None:
            error = self._thread_error
            if isinstance(error, EvaluationError):
                return error
            return EvaluationError(ErrorKind.RUNNER_ERROR, f"the model server could not run: {error!r}")
        result = self._result
        if result is not None:
            failure = result.failure()
            if failure is not None:
                failure.message = f"{failure.message} (while {what})"
                return failure
            return EvaluationError(
                ErrorKind.RUNTIME_ERROR,
                f"the model server exited while {what}: did the model end the process?",
                result.log_tail,
            )
        return EvaluationError(ErrorKind.RUNTIME_ERROR, f"the model server stopped answering while {what}")

    def _child_error(self, header: dict[str, Any], what: str) -> EvaluationError:
        """The error an ``error`` frame reports (user kinds only; see untrusted.reported_error)."""
        if not header.get("message"):
            header = {**header, "message": f"the model failed while {what}"}
        return reported_error(header, what="the model server's answer", log_tail=self.log_tail())

    def log_tail(self) -> str:
        if self._result is not None:
            return self._result.log_tail
        return "\n".join(self._log)

    # -- shared memory ----------------------------------------------------------------------
    def _drop_ring(self) -> None:
        ring, self._ring = self._ring, None
        if ring is None:
            return
        with contextlib.suppress(BufferError, ValueError):
            ring.region.close()
        with contextlib.suppress(OSError):
            os.close(ring.fd)

    def _ensure_ring(self, slot_bytes: int) -> None:
        """A ring with room for ``slot_bytes`` per slot (grown, never shrunk; only while idle)."""
        if self._ring is not None and self._ring.slot_bytes >= slot_bytes:
            return
        size = max(slot_bytes, 2 * (self._ring.slot_bytes if self._ring else 0))
        size = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
        self._drop_ring()
        fd = os.memfd_create("runner-model-ring", os.MFD_CLOEXEC)
        os.ftruncate(fd, size * SLOTS)
        region = mmap.mmap(fd, size * SLOTS)
        self._ring = _Ring(fd, region, size, [_Slot(i, i * size, size) for i in range(SLOTS)])
        self._send({"op": "map", "size": size * SLOTS}, fds=(fd,))

    # -- streaming --------------------------------------------------------------------------
    def forward_items_per_s(
        self, shapes: list[list[int]], *, iters: int = 10, warmup: int = 2, deadline: float | None = None
    ) -> float:
        """The model's pure forward throughput measured inside the sandbox (random resident input)."""
        self._send({"op": "bench", "shapes": shapes, "iters": iters, "warmup": warmup})
        header, _ = self._receive(deadline, None, what="timing the forward pass")
        if header.get("op") != "bench":
            raise self._child_error(header, "timing the forward pass")
        return parse(BenchFrame, header, what="the model server's timing").items_per_s

    def stream(
        self,
        batches: Iterable[tuple[Any, Any]],
        on_output: Callable[[Any, int, int, np.ndarray], None],
        *,
        max_items: int,
        deadline: float | None = None,
        cancel: threading.Event | None = None,
    ) -> StreamStats:
        """Run the model on every ``(inputs, tag)`` of ``batches`` and call
        ``on_output(tag, lo, hi, outputs)`` for items ``lo:hi`` of that batch (in whatever order the
        answers come; ``outputs`` is a read-only array this process owns).

        1. Split each batch into chunks of at most ``max_items``.
        2. Keep up to SLOTS chunks in flight: copy a chunk into a free slot, send ``run``.
        3. On each answer: check it, hand it on, free its slot. An out-of-memory answer halves
           ``max_items`` and sends the chunk again in halves; at one item it is OUT_OF_MEMORY.
        """
        if not self.alive:
            raise EvaluationError(ErrorKind.RUNNER_ERROR, "the model server is not running")
        stats = StreamStats(max_items=max(1, int(max_items)))
        pending: deque[_Chunk] = deque()
        inflight: dict[int, _Slot] = {}
        source = iter(batches)
        exhausted = False
        while True:
            while len(inflight) < SLOTS:
                if not pending:
                    if exhausted:
                        break
                    item = next(source, None)
                    if item is None:
                        exhausted = True
                        break
                    inputs, tag = item
                    values = as_inputs(inputs)
                    n = len(values[0])
                    pending.extend(
                        _Chunk(tag, lo, min(lo + stats.max_items, n), values)
                        for lo in range(0, n, stats.max_items)
                    )
                    continue
                chunk = pending.popleft()
                if chunk.size > stats.max_items:  # the batch size shrank after an out-of-memory answer
                    pending.extendleft(
                        reversed(
                            [
                                _Chunk(chunk.tag, lo, min(lo + stats.max_items, chunk.hi), chunk.inputs)
                                for lo in range(chunk.lo, chunk.hi, stats.max_items)
                            ]
                        )
                    )
                    continue
                parts = [_slice(v, chunk.lo, chunk.hi) for v in chunk.inputs]
                in_bytes = sum(_nbytes(p) for p in parts)
                need = in_bytes + max(in_bytes, chunk.size * 4096) + 64 * (len(parts) + 1)
                if self._ring is None or self._ring.slot_bytes < need:
                    if inflight:  # grow only while idle
                        pending.appendleft(chunk)
                        break
                    self._ensure_ring(need)
                self._dispatch(chunk, parts, inflight)
            if not inflight:
                if exhausted and not pending:
                    return stats
                continue
            if (cancel is not None and cancel.is_set()) or (
                deadline is not None and time.monotonic() > deadline
            ):
                self._check_waiting(deadline, cancel, "running the model")
            self._collect(inflight, pending, stats, on_output, deadline, cancel)

    def _dispatch(self, chunk: _Chunk, parts: list[Any], inflight: dict[int, _Slot]) -> None:
        ring = self._ring
        assert ring is not None
        slot = next(s for s in ring.slots if s.chunk is None)
        offset = slot.offset
        described = []
        for part in parts:
            described.append(_write_input(ring.region, offset, part))
            offset += (_nbytes(part) + 63) // 64 * 64
        self._next_id += 1
        slot.chunk, slot.ident = chunk, self._next_id
        inflight[slot.ident] = slot
        slot.out_offset = (offset + 63) // 64 * 64
        slot.out_capacity = slot.offset + slot.size - slot.out_offset
        self._send(
            {
                "op": "run",
                "id": slot.ident,
                "inputs": described,
                "out_offset": slot.out_offset,
                "out_capacity": slot.out_capacity,
            }
        )

    def _collect(
        self,
        inflight: dict[int, _Slot],
        pending: deque[_Chunk],
        stats: StreamStats,
        on_output: Callable[[Any, int, int, np.ndarray], None],
        deadline: float | None,
        cancel: threading.Event | None,
    ) -> None:
        header, payload = self._receive(deadline, cancel, what="running the model")
        slot = inflight.pop(header.get("id"), None) if isinstance(header.get("id"), int) else None
        op = header.get("op")
        if slot is None:
            self.broken = True
            if op == "error":
                raise self._child_error(header, "running the model")
            raise EvaluationError(
                ErrorKind.RUNTIME_ERROR, "the model server answered a batch it was never sent"
            )
        chunk = slot.chunk
        assert chunk is not None
        try:
            if op == "error":
                if header.get("kind") == ErrorKind.OUT_OF_MEMORY and header.get("retry") and chunk.size > 1:
                    stats.oom_retries += 1
                    # A chunk sent before an earlier shrink must not shrink the batch again.
                    stats.max_items = max(1, min(stats.max_items, chunk.size // 2))
                    log.info("out of memory at %d items: retrying with %d", chunk.size, stats.max_items)
                    pending.appendleft(chunk)
                    return
                if header.get("kind") == ErrorKind.OUT_OF_MEMORY:
                    raise EvaluationError(
                        ErrorKind.OUT_OF_MEMORY,
                        "the model ran out of memory even on one item at "
                        f"a time: {printable(header.get('message'))[:1500]}",
                        self.log_tail(),
                    )
                raise self._child_error(header, "running the model")
            if op != "out":
                self.broken = True
                raise EvaluationError(ErrorKind.RUNTIME_ERROR, f"the model server answered {op!r} to a batch")
            try:
                frame = parse(OutFrame, header, what="the model server's answer", log_tail=self.log_tail())
            except EvaluationError:
                self.broken = True
                raise
            outputs = self._output_view(frame, payload, slot)
            on_output(chunk.tag, chunk.lo, chunk.hi, outputs)
            del outputs
        finally:
            slot.chunk = None
        self.info.update(frame.info)
        stats.record(chunk.size, frame.compute_s)

    def _output_view(self, frame: OutFrame, payload: bytes | None, slot: _Slot) -> np.ndarray:
        if frame.dtype not in _WIRE_DTYPES:
            self.broken = True
            raise EvaluationError(
                ErrorKind.WRONG_OUTPUT,
                f"the model returned something that is not a numeric "
                f"tensor (dtype {printable(frame.dtype, keep_newlines=False)[:40]}, shape {frame.shape})",
            )
        dtype = np.dtype(_WIRE_DTYPES[frame.dtype])
        expected = math.prod(frame.shape) * dtype.itemsize
        if expected != frame.nbytes:
            self.broken = True
            raise EvaluationError(
                ErrorKind.RUNTIME_ERROR, "the model server's answer does not match its own shape"
            )
        if frame.where == "shm":
            if frame.nbytes > slot.out_capacity or self._ring is None:
                self.broken = True
                raise EvaluationError(ErrorKind.RUNTIME_ERROR, "the model server wrote past its slot")
            # Copied out at once: the child can still write to shared memory, and what is checked
            # must be what is scored.
            view = np.ndarray(
                tuple(frame.shape), dtype=dtype, buffer=self._ring.region, offset=slot.out_offset
            ).copy()
        elif payload is not None:
            view = np.frombuffer(payload, dtype=dtype).reshape(frame.shape)
        else:
            self.broken = True
            raise EvaluationError(ErrorKind.RUNTIME_ERROR, "the model server's answer has no data")
        view.flags.writeable = False
        return view


# --------------------------------------------------------------------------------------------
# Warm servers.
# --------------------------------------------------------------------------------------------
class ServerPool:
    """Idle servers of this process, by settings; closed after ``idle_s`` without a job."""

    def __init__(self, idle_s: float | None = None, max_idle: int = 1):
        self.idle_s = idle_s if idle_s is not None else _env_float("RUNNER_MODEL_IDLE_S", 300.0)
        self.max_idle = max_idle
        self.loads = 0  # servers started by this pool: how many times a model was loaded
        self._idle: dict[ServerSettings, tuple[ModelServer, threading.Timer | None]] = {}
        self._lock = threading.Lock()

    def take(self, settings: ServerSettings) -> ModelServer | None:
        with self._lock:
            entry = self._idle.pop(settings, None)
        if entry is None:
            return None
        server, timer = entry
        if timer is not None:
            timer.cancel()
        if server.alive:
            return server
        server.close(kill=True)
        return None

    def give_back(self, server: ModelServer) -> None:
        if not server.alive or self.idle_s <= 0:
            server.close()
            return
        timer = threading.Timer(self.idle_s, self._expire, args=(server,))
        timer.daemon = True
        with self._lock:
            old = self._idle.pop(server.settings, None)
            self._idle[server.settings] = (server, timer)
            extra = []
            while len(self._idle) > self.max_idle:
                key = next(iter(self._idle))
                extra.append(self._idle.pop(key))
        timer.start()
        for stale, stale_timer in ([old] if old and old[0] is not server else []) + extra:
            if stale_timer is not None:
                stale_timer.cancel()
            stale.close()

    def _expire(self, server: ModelServer) -> None:
        with self._lock:
            entry = self._idle.get(server.settings)
            if entry is None or entry[0] is not server:
                return
            del self._idle[server.settings]
        log.info("closing the idle model server of %s", server.settings.sha256[:12])
        server.close()

    def close_idle(self, keep: ServerSettings | None = None) -> None:
        with self._lock:
            doomed = [(k, e) for k, e in self._idle.items() if k != keep]
            for key, _ in doomed:
                del self._idle[key]
        for _, (server, timer) in doomed:
            if timer is not None:
                timer.cancel()
            server.close()

    def idle_count(self) -> int:
        with self._lock:
            return len(self._idle)

    @contextlib.contextmanager
    def borrow(
        self,
        artifact: Path | str,
        settings: ServerSettings,
        *,
        deadline: float | None = None,
        cancel: threading.Event | None = None,
        min_lifetime_s: float = 0.0,
    ) -> Iterator[tuple[ModelServer, bool]]:
        """A running server for ``settings``: the warm one when there is one (``reused`` True),
        else a new one. Handed back after the block; closed instead when the block raised."""
        server = self.take(settings)
        if server is not None and server.lifetime_left() < min_lifetime_s:
            server.close()
            server = None
        reused = server is not None
        if server is None:
            self.close_idle()  # one model per device at a time
            server = ModelServer(artifact, settings)
            self.loads += 1
            server.start(deadline=deadline, cancel=cancel)
        try:
            yield server, reused
        except BaseException:
            server.close(kill=True)
            raise
        server.jobs += 1
        self.give_back(server)


POOL = ServerPool()


@atexit.register
def _close_pool() -> None:
    POOL.close_idle()
