"""Fixtures for the runner's tests: a stand-in site over real HTTP, a client for it, submissions
written to disk, and a hard requirement on the sandbox (bubblewrap) for tests that run code."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from runner.client import SiteClient
from runner.host_limits import unmount_under
from runner.sandbox import sandbox_available

from .fakesite import TOKEN, FakeSite


@pytest.fixture
def bwrap(tmp_path):
    """Tests that run submitted code need the real sandbox: fail loudly, never skip, without it.
    Afterwards, no process of this test's sandboxes may be left."""
    if shutil.which("bwrap") is None:
        pytest.fail("bubblewrap (bwrap) is not installed: the runner's sandbox needs it (apt install bubblewrap)")
    status = sandbox_available()  # probed once per process
    if not status.available:
        pytest.fail(f"the bubblewrap sandbox does not work on this machine: {status.detail}")
    yield
    unmount_under(tmp_path)  # the scratch volumes a root runner mounted (runner/host_limits.py)
    deadline = time.monotonic() + 5
    while (left := sandbox_processes(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"sandboxed processes outlived their run: {left}"


def sandbox_processes(under: Path) -> list[int]:
    """Processes (of any user) whose working directory lies under ``under``: a sandboxed
    program runs in its scratch folder, which the tests keep under their tmp_path."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if cwd == str(under) or cwd.startswith(f"{under}/"):
            found.append(int(entry))
    return found


@pytest.fixture
def site():
    fake = FakeSite().start()
    yield fake
    fake.stop()


@pytest.fixture
def client(site):
    with SiteClient(site.url, TOKEN, backoff_s=0.01, max_backoff_s=0.05) as c:
        yield c


@pytest.fixture
def write_submission(tmp_path):
    """Write a submitted file as a researcher would upload it; returns its path."""

    def write(source: bytes, name: str = "my_optimizer.py") -> Path:
        path = tmp_path / "uploads" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(source)
        return path

    return write


@pytest.fixture
def pool(request, monkeypatch, tmp_path):
    """A pool of sandboxed model servers (runner.serve.ServerPool) working under ``tmp_path``; a
    server closes after ``POOL_IDLE_S`` idle seconds (a test module's constant; 0.6 without one)."""
    from runner.serve import ServerPool

    request.getfixturevalue("bwrap")
    monkeypatch.setenv("RUNNER_WORK_DIR", str(tmp_path))
    made = ServerPool(idle_s=getattr(request.module, "POOL_IDLE_S", 0.6))
    yield made
    made.close_idle()
