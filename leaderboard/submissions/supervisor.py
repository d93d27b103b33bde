"""The demo's process supervision: children that never outlive the demo, however it ends.

``make demo`` runs the site, a site worker and a runner as child processes. Each starts in its
own process group (so stopping it reaches its own children: Celery's pool, the sandbox) and with
``PR_SET_PDEATHSIG`` set to SIGKILL, so the kernel kills it if the demo dies without cleaning up,
even by SIGKILL; Celery's pool processes and the sandbox (bwrap ``--die-with-parent``) follow
their own parents the same way. ``stop_on_signals`` turns SIGTERM and SIGHUP (``kill``,
``timeout``, a closed terminal) into the same orderly stop as Ctrl-C.

No Django here: the test of this module starts it in a bare interpreter.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence

PR_SET_PDEATHSIG = 1  # linux/prctl.h


class Stopped(BaseException):
    """Raised in the main thread by SIGTERM or SIGHUP, like KeyboardInterrupt by SIGINT."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def die_with_parent(signum: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``signum`` to this process when its parent exits (Linux only; a
    no-op elsewhere). If the parent has already gone, exit at once."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signum)


def _child_setup(parent: int) -> Callable[[], None]:
    def setup() -> None:  # runs in the child between fork and exec
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return setup


@contextlib.contextmanager
def stop_on_signals(signums: Sequence[int] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """Within the block, ``signums`` raise :class:`Stopped` in the main thread; the previous
    handlers come back afterwards."""

    def handler(signum: int, frame: object) -> None:
        raise Stopped(signum)

    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class Supervisor:
    """Named child processes that all stop together.

    ``start`` launches one (own process group, killed by the kernel if this process dies);
    ``restart_exited`` starts again those allowed restarts; ``exited`` names the long-running
    ones that have ended; ``stop`` sends SIGTERM to every group, waits up to ``grace`` seconds,
    then sends SIGKILL to whatever is left.
    """

    def __init__(self, grace: float = 10.0):
        self.grace = grace
        self.procs: dict[str, subprocess.Popen] = {}
        self.one_shot: set[str] = set()
        self._launch: dict[str, tuple[list[str], dict[str, str] | None, dict[str, object]]] = {}
        self.restarts_left: dict[str, int] = {}

    def start(self, name: str, cmd: Sequence[str], *, env: dict[str, str] | None = None,
              one_shot: bool = False, restarts: int = 0, **popen: object) -> subprocess.Popen:
        """Start ``cmd``; a ``one_shot`` process (a build step) may end without stopping the rest;
        one that ends on its own may be started again ``restarts`` times (``restart_exited``)."""
        proc = subprocess.Popen(list(cmd), env=env, start_new_session=True,
                                preexec_fn=_child_setup(os.getpid()), **popen)  # type: ignore[call-overload]
        self.procs[name] = proc
        self._launch[name] = (list(cmd), env, popen)
        self.restarts_left.setdefault(name, restarts)
        if one_shot:
            self.one_shot.add(name)
        return proc

    def restart_exited(self) -> list[tuple[str, int | None]]:
        """Start again each ended process that has restarts left; returns (name, its exit code)."""
        restarted = []
        for name in self.exited():
            if self.restarts_left.get(name, 0) > 0:
                self.restarts_left[name] -= 1
                code = self.procs[name].returncode
                _signal_group(self.procs[name].pid, signal.SIGKILL)  # what the dead leader left behind
                cmd, env, popen = self._launch[name]
                self.start(name, cmd, env=env, **popen)
                restarted.append((name, code))
        return restarted

    def exited(self) -> list[str]:
        return [n for n, p in self.procs.items() if n not in self.one_shot and p.poll() is not None]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):  # still running: SIGKILLed just below
                proc.wait(max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():
            _signal_group(proc.pid, signal.SIGKILL)  # the group's stragglers too, even if its leader ended
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)
