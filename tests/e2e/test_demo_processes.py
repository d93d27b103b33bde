"""`make demo` stops all of itself however it is stopped, and hands its runner the token and the
broker without putting the token on a command line.

The real command (`manage.py rundemo --no-baselines`) runs in a private var/ folder on SQLite and
its filesystem broker; the test reads the process tree from /proc, as `ps` would.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leaderboard.submissions.supervisor import Supervisor, stop_on_signals

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def descendants(pid: int) -> dict[int, str]:
    """Every live descendant of ``pid``: {pid: its start time}, read from /proc."""
    found: dict[int, str] = {}
    stack = [pid]
    while stack:
        parent = stack.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found and (start := start_time(child)):
                    found[child] = start
                    stack.append(child)
    return found


def start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/pid/stat), or None if it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def survivors(processes: dict[int, str]) -> list[str]:
    """Those of ``processes`` still alive (the same pid and start time), with their command lines."""
    alive = []
    for pid, started in processes.items():
        if start_time(pid) == started:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            alive.append(f"{pid}: {cmdline[:120]}")
    return alive


def wait_until(predicate, timeout: float, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def command_line(pid: int) -> list[str]:
    """The argv of ``pid``; [] once it has exited or while it is a zombie (empty cmdline): the
    demo's processes start and stop while the tests walk /proc."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode().split("\0") if raw else []


def is_runner_work(pid: int) -> bool:
    argv = command_line(pid)
    return len(argv) > 2 and argv[1].endswith("/runner") and argv[2] == "work"


def environment(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    return dict(p.split("=", 1) for p in pairs if "=" in p)


@pytest.fixture
def demo(tmp_path):
    """Start `manage.py rundemo --no-baselines` and wait until its three processes run; yields
    (the demo's Popen, its descendants once all three are up, the runner's pid, the var folder)."""
    var = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL")}
    env.update(LEADERBOARD_VAR=str(var), DATABASE_URL=f"sqlite:///{var / 'db.sqlite3'}", PYTHONUNBUFFERED="1")
    log = open(tmp_path / "demo.log", "w+")
    proc = subprocess.Popen([sys.executable, "manage.py", "rundemo", "--no-baselines", "--port", str(free_port())],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def started():
        tree = descendants(proc.pid)
        runner = [p for p in tree if is_runner_work(p)]
        # web, site worker and its pool process, beat, runner and its pool process
        if runner and len(tree) >= 6 and "The platform is running" in Path(log.name).read_text():
            return tree, runner[0]
        return None

    try:
        ready = wait_until(started, 120)
        assert ready, Path(log.name).read_text()[-3000:]
        yield proc, ready[0], ready[1], var
    finally:
        for pid in [proc.pid, *descendants(proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(10)
        log.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL],
                         ids=["SIGTERM", "SIGHUP", "SIGKILL"])
def test_stopping_the_demo_by_any_signal_leaves_no_process_of_it_running(demo, signum):
    proc, processes, _, _ = demo
    assert len(processes) >= 6  # web, site worker and its pool, beat, runner and its pool
    os.kill(proc.pid, signum)
    proc.wait(30)
    left = wait_until(lambda: not survivors(processes), 30) or survivors(processes)
    assert left is True, left


def test_the_demo_runner_gets_its_token_and_the_sites_broker_from_its_environment_not_its_command_line(demo):
    _, _, runner, var = demo
    argv, env = command_line(runner), environment(runner)
    token = env.get("RUNNER_TOKEN", "")
    assert len(token) >= 20  # the node's real token reached the runner
    assert not any(token in part for part in argv) and "--token" not in " ".join(argv)
    assert env["CELERY_BROKER_URL"] == f"filesystem://{var / 'broker'}"  # the site's broker, not a derived one
    assert [p for p in argv if p.startswith("--pool")] == ["--pool=cpu", "--pool=gpu"]
    assert argv[argv.index("--device") + 1] == "cpu"


SUPERVISED = """
import sys, time
from leaderboard.submissions.supervisor import Supervisor, stop_on_signals
supervisor = Supervisor(grace=5)
try:
    with stop_on_signals():
        supervisor.start("sleeper", ["sleep", "300"])
        supervisor.start("forker", [sys.executable, "-c", "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"])
        print("started", flush=True)
        while not supervisor.exited():
            time.sleep(0.2)
except BaseException as stop:
    print("stopping", type(stop).__name__, flush=True)
finally:
    supervisor.stop()
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGKILL],
                         ids=["SIGTERM", "SIGHUP", "SIGINT", "SIGKILL"])
def test_the_supervisor_takes_its_children_and_theirs_down_with_it(signum):
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISED], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    processes = wait_until(lambda: tree if len(tree := descendants(proc.pid)) == 3 else None, 10)
    assert processes, descendants(proc.pid)
    children = {p: s for p, s in processes.items() if parent_of(p) == proc.pid}
    assert len(children) == 2
    os.kill(proc.pid, signum)
    proc.wait(20)
    if signum != signal.SIGKILL:
        assert re.match(r"stopping (Stopped|KeyboardInterrupt)", proc.stdout.read())
        assert not survivors(processes)  # the children and the grandchild
    else:
        # Nothing of the supervisor ran: the kernel killed its children (PR_SET_PDEATHSIG). A
        # grandchild follows only if its own parent asked the same (Celery's pool and the sandbox do).
        assert wait_until(lambda: not survivors(children), 10), survivors(children)
        for pid in processes:
            if start_time(pid) == processes[pid]:
                os.kill(pid, signal.SIGKILL)


def test_stop_on_signals_restores_the_previous_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
    assert Supervisor().exited() == []


def test_a_crashed_worker_is_started_again_until_its_restarts_run_out(tmp_path):
    supervisor = Supervisor(grace=1)
    count = tmp_path / "starts"
    supervisor.start("worker", [sys.executable, "-c", f"open({str(count)!r}, 'a').write('x'); raise SystemExit(3)"],
                     restarts=1)
    try:
        assert wait_until(lambda: supervisor.exited() == ["worker"], 10)
        assert supervisor.restart_exited() == [("worker", 3)]
        assert wait_until(lambda: supervisor.exited() == ["worker"], 10)
        assert supervisor.restart_exited() == []  # out of restarts: the demo stops
        assert count.read_text() == "xx"
    finally:
        supervisor.stop()


def test_a_demo_worker_that_crashes_is_started_again_and_the_demo_goes_on(demo):
    proc, processes, _, _ = demo

    def site_workers():
        return [p for p in descendants(proc.pid) if parent_of(p) == proc.pid and "site" in command_line(p)
                and "worker" in command_line(p)]

    [first] = site_workers()
    os.kill(first, signal.SIGKILL)
    replaced = wait_until(lambda: [p for p in site_workers() if p != first], 30)
    assert replaced and proc.poll() is None
