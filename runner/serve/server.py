"""The parent side of the sandboxed model server (the program is runner/sandboxed/model_server.py,
whose docstring holds the protocol).

A :class:`ModelServer` starts the program once through ``run_sandboxed`` (the artifact and the
program bound read-only), listens on an AF_UNIX socket in a folder the sandbox sees read-only,
hands the program a shared-memory ring (runner/serve/ring.py) and streams batches through it:
while the program computes one slot the parent fills the next. Labels never leave this process.
Everything the program answers is checked here: frame sizes (runner/serve/frames.py), shapes and
dtypes (runner/serve/answers.py); the tracks check the output contract and compute the metrics.

One piece: starting, streaming and stopping share the connection, the ring and one rule for what a
program that stopped answering amounts to (:meth:`ModelServer._died`).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runner.host_limits import HostLimitError, SandboxUser, lease_user
from runner.sandbox import DEFAULT_MAX_PROCESSES, SandboxResult, run_sandboxed
from runner.sandboxed import stage
from runner.serve.answers import MAX_INLINE_BYTES, WIRE_DTYPES, BenchFrame, OutFrame, ReadyFrame
from runner.serve.frames import POLL_S, FrameChannel, PeerGone
from runner.serve.ring import SLOTS, Chunk, Ring, Slot, as_inputs, item_range, nbytes
from runner.serve.settings import ServerSettings, default_memory_bytes, default_threads, env_float
from runner.spec import ErrorKind, EvaluationError
from runner.untrusted import parse, printable, reported_error, tampered
from runner.workdir import LockedFolder, stage_input_folder

log = logging.getLogger(__name__)


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
        self.lifetime_s = lifetime_s or env_float("RUNNER_MODEL_SERVER_LIFETIME_S", 12 * 3600)
        self.memory_bytes = memory_bytes or default_memory_bytes()
        self.threads = settings.threads or default_threads(settings.device)
        self.work_root = work_root or os.environ.get("RUNNER_WORK_DIR") or None
        self.info: dict[str, Any] = {}
        self.started_at: float | None = None
        self.jobs = 0
        self._dir: Path | None = None
        self._folder: LockedFolder | None = None
        self._listener: socket.socket | None = None
        self._channel: FrameChannel | None = None
        self._ring: Ring | None = None
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
            and self._channel is not None
            and not self.broken
            and not self._kill.is_set()
        )

    def lifetime_left(self) -> float:
        if self.started_at is None:
            return 0.0
        return self.lifetime_s - (time.monotonic() - self.started_at)

    def _stage(self) -> tuple[Path, Path, Path]:
        """The server's private folder (locked while in use, runner/workdir.py) holding ``io``, which
        the sandbox reads: the program with its companions, the artifact as ``model`` and, for a
        safetensors artifact with ``"pretrained": true``, the library's published weights as
        ``published`` (fetched here, outside the sandbox: runner/serve/published_weights.py)."""
        files: dict[str, Path] = {"model": self.artifact}
        published = self._published_weights()
        if published is not None:
            files["published" + "".join(published.suffixes[-1:])] = published
        self._folder = LockedFolder("runner-model-", self.work_root)
        self._dir = self._folder.path
        io = stage_input_folder(self._dir, files, name="io")
        return io, stage("model_server.py", io), io / "model"

    def _published_weights(self) -> Path | None:
        """The published weights a pretrained safetensors submission starts from (EvaluationError
        RUNNER_ERROR when this node cannot get them), else None."""
        if not self.settings.architecture:
            return None
        spec = json.loads(self.settings.architecture)
        if not spec.get("pretrained"):
            return None
        from runner.serve.published_weights import published_weights

        return published_weights(str(spec["architecture"]))

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
        if s.architecture:
            argv += ["--architecture", s.architecture]
            argv += [f"--published={p}" for p in io.glob("published*")]
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
        self._channel = FrameChannel(sock, what="the model server's answer", poll_s=POLL_S)

    def close(self, *, kill: bool = False) -> None:
        """Stop the child (politely unless ``kill``), wait for the sandbox to end, remove its folder."""
        self.broken = True
        if self._channel is not None and not kill and self._thread is not None and self._thread.is_alive():
            with contextlib.suppress(OSError):
                self._send({"op": "exit"})
        if self._thread is not None:
            self._thread.join(timeout=0 if kill else 10)
            if self._thread.is_alive():
                self._kill.set()
                self._thread.join(timeout=30)
        else:
            self._kill.set()
        if self._channel is not None:
            self._channel.close()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
        self._channel, self._listener = None, None
        self._drop_ring()
        if self._folder is not None:
            self._folder.close()  # whatever the sandbox left in its scratch (runner/workdir.py)
            self._folder = self._dir = None
        self._lease.close()
        self._user = None

    # -- frames -----------------------------------------------------------------------------
    def _send(self, header: dict[str, Any], fds: tuple[int, ...] = ()) -> None:
        assert self._channel is not None
        try:
            self._channel.send(header, fds)
        except PeerGone as exc:
            raise self._died("sending a batch") from exc

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

    def _receive(
        self, deadline: float | None, cancel: threading.Event | None, *, what: str
    ) -> tuple[dict[str, Any], bytes | None]:
        """The next frame: (header, inline payload or None)."""
        assert self._channel is not None

        def waiting() -> None:
            self._check_waiting(deadline, cancel, what)

        try:
            header = self._channel.receive(waiting)
            if header.get("op") != "out" or header.get("where") != "inline":
                return header, None
            nbytes = header.get("nbytes")
            if not isinstance(nbytes, int) or nbytes < 0 or nbytes > MAX_INLINE_BYTES:
                raise EvaluationError(
                    ErrorKind.WRONG_OUTPUT,
                    f"the model returned {nbytes} bytes for one batch, "
                    f"over the limit of {MAX_INLINE_BYTES}; shape {header.get('shape')}",
                )
            return header, self._channel.receive_bytes(nbytes, waiting)
        except PeerGone as exc:
            raise self._died(what) from exc
        except EvaluationError:
            self.broken = True
            raise

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
        """The error an ``error`` frame reports: the one place its kind is read, kept only when it
        is a user error kind (untrusted.reported_error); a malformed frame is WRONG_OUTPUT."""
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
        if ring is not None:
            ring.close()

    def _ensure_ring(self, slot_bytes: int) -> None:
        """A ring with room for ``slot_bytes`` per slot (grown, never shrunk; only while idle)."""
        if self._ring is not None and self._ring.slot_bytes >= slot_bytes:
            return
        size = max(slot_bytes, 2 * (self._ring.slot_bytes if self._ring else 0))
        self._drop_ring()
        self._ring = Ring.create(size)
        self._send({"op": "map", "size": self._ring.nbytes}, fds=(self._ring.fd,))

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

    def saliency(
        self,
        images: np.ndarray,
        request: dict[str, Any],
        *,
        deadline: float | None = None,
        cancel: threading.Event | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Saliency maps of ``images`` (float32 [n, C, H, W] in [0, 1]) computed in the sandbox
        (runner/sandboxed/saliency_server.py; ``request`` its method, layer, targets, fill and
        side S): uint8 [n, S, S] and what the child says it ran (method, layer, params, targets,
        compute_s; data, not trusted). Raises EvaluationError: the child's error, WRONG_OUTPUT
        for maps of another shape or dtype, TIMEOUT past ``deadline``, LEASE_EXPIRED on ``cancel``."""
        if not self.alive:
            raise EvaluationError(ErrorKind.RUNNER_ERROR, "the model server is not running")
        side = int(request.get("side") or 16)
        need = images.nbytes + len(images) * side * side + 256
        self._ensure_ring(need)
        assert self._ring is not None
        slot = self._ring.free_slot()
        described = self._ring.fill(slot, [images])
        slot.chunk = Chunk(None, 0, len(images), [images])  # the slot is busy until the answer
        self._next_id += 1
        try:
            self._send(
                {
                    **request,
                    "op": "saliency",
                    "id": self._next_id,
                    "inputs": described,
                    "out_offset": slot.out_offset,
                    "out_capacity": slot.out_capacity,
                }
            )
            header, payload = self._receive(deadline, cancel, what="computing saliency maps")
            if header.get("op") == "error":
                raise self._child_error(header, "computing saliency maps")
            frame = parse(OutFrame, header, what="the model server's saliency maps", log_tail=self.log_tail())
            if frame.id != self._next_id or frame.dtype != "uint8" or frame.shape != [len(images), side, side]:
                self.broken = True
                raise EvaluationError(
                    ErrorKind.WRONG_OUTPUT,
                    f"the model server answered saliency maps {frame.dtype} {frame.shape} "
                    f"for {len(images)} images of side {side}",
                )
            maps = self._output_view(frame, payload, slot)
        finally:
            slot.chunk = None
        return maps, {**frame.info, "compute_s": frame.compute_s}

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
        pending: deque[Chunk] = deque()
        inflight: dict[int, Slot] = {}
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
                        Chunk(tag, lo, min(lo + stats.max_items, n), values)
                        for lo in range(0, n, stats.max_items)
                    )
                    continue
                chunk = pending.popleft()
                if chunk.size > stats.max_items:  # the batch size shrank after an out-of-memory answer
                    pending.extendleft(
                        reversed(
                            [
                                Chunk(chunk.tag, lo, min(lo + stats.max_items, chunk.hi), chunk.inputs)
                                for lo in range(chunk.lo, chunk.hi, stats.max_items)
                            ]
                        )
                    )
                    continue
                parts = [item_range(v, chunk.lo, chunk.hi) for v in chunk.inputs]
                in_bytes = sum(nbytes(p) for p in parts)
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

    def _dispatch(self, chunk: Chunk, parts: list[Any], inflight: dict[int, Slot]) -> None:
        ring = self._ring
        assert ring is not None
        slot = ring.free_slot()
        described = ring.fill(slot, parts)
        self._next_id += 1
        slot.chunk, slot.ident = chunk, self._next_id
        inflight[slot.ident] = slot
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
        inflight: dict[int, Slot],
        pending: deque[Chunk],
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
                error = self._child_error(header, "running the model")  # its kind read once, clamped there
                if error.kind != ErrorKind.OUT_OF_MEMORY:
                    raise error
                if header.get("retry") is True and chunk.size > 1:  # a boolean: the report parsed
                    stats.oom_retries += 1
                    # A chunk sent before an earlier shrink must not shrink the batch again.
                    stats.max_items = max(1, min(stats.max_items, chunk.size // 2))
                    log.info("out of memory at %d items: retrying with %d", chunk.size, stats.max_items)
                    pending.appendleft(chunk)
                    return
                raise EvaluationError(
                    ErrorKind.OUT_OF_MEMORY,
                    f"the model ran out of memory even on one item at a time: {error.message[:1500]}",
                    self.log_tail(),
                )
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

    def _output_view(self, frame: OutFrame, payload: bytes | None, slot: Slot) -> np.ndarray:
        if frame.dtype not in WIRE_DTYPES:
            self.broken = True
            raise EvaluationError(
                ErrorKind.WRONG_OUTPUT,
                f"the model returned something that is not a numeric "
                f"tensor (dtype {printable(frame.dtype, keep_newlines=False)[:40]}, shape {frame.shape})",
            )
        dtype = np.dtype(WIRE_DTYPES[frame.dtype])
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

