"""Warm model servers. A worker process keeps the server of its last submission in :data:`POOL`,
keyed by the settings it was started with (the artifact's sha256 among them), so the next job of
the same submission (Celery prefork processes outlive their tasks) skips loading the model. An
idle server is closed after ``RUNNER_MODEL_IDLE_S`` seconds (default 300); starting a server for
another key first closes idle ones, so a GPU holds one submission's model at a time.
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from runner.serve.server import ModelServer
from runner.serve.settings import ServerSettings, env_float

log = logging.getLogger(__name__)


class ServerPool:
    """Idle servers of this process, by settings; closed after ``idle_s`` without a job."""

    def __init__(self, idle_s: float | None = None, max_idle: int = 1):
        self.idle_s = idle_s if idle_s is not None else env_float("RUNNER_MODEL_IDLE_S", 300.0)
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
