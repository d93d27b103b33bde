"""Limits that hold for the whole host: memory outside the address space (/dev/shm, /tmp,
memfds) is capped, scratch is a volume whose size the kernel enforces at once, each job runs as a
uid of its own so one job's fork bomb cannot stop another's sandbox, and the model server's
memory follows the host's."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from runner.host_limits import HostLimitError, cgroup_parent, host_memory_bytes, lease_user, sandbox_uids
from runner.sandbox import run_sandboxed
from runner.spec import ErrorKind, EvaluationError

pytestmark = pytest.mark.usefixtures("bwrap")
MiB = 1 << 20
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="only a root runner can mount volumes and switch uids")


def run_python(code: str, tmp_path: Path, name: str = "run", **options):
    options.setdefault("time_limit_s", 30)
    return run_sandboxed([sys.executable, "-I", "-c", code], scratch=tmp_path / name / "scratch", **options)


FILL = ("import errno, os, sys\n"
        "path = sys.argv[1]\n"
        "s = os.statvfs(os.path.dirname(path))\n"
        "size, written = s.f_blocks * s.f_frsize, 0\n"
        "try:\n"
        "    with open(path, 'wb') as fh:\n"
        "        while written < (1 << 34):\n"
        "            fh.write(b'x' * (1 << 20)); fh.flush(); written += 1 << 20\n"
        "except OSError as exc:\n"
        "    print(size, written, errno.errorcode[exc.errno])\n")


@pytest.mark.parametrize("where", ["/dev/shm", "/tmp"])
def test_dev_shm_and_tmp_are_tmpfs_mounts_no_larger_than_their_caps(tmp_path, where):
    result = run_sandboxed([sys.executable, "-I", "-c", FILL, f"{where}/fill"], scratch=tmp_path / "run" / "scratch",
                           time_limit_s=30, max_shm_bytes=48 * MiB, max_file_bytes=512 * MiB, tmp_bytes=32 * MiB)
    assert result.ok, result.log_tail
    size, written, code = result.stdout_tail.split()
    cap = 48 * MiB if where == "/dev/shm" else 32 * MiB
    assert int(size) <= cap and int(written) <= cap and code == "ENOSPC"


def test_memfd_memory_cannot_escape_the_memory_limit(tmp_path):
    """Pages of a memfd are outside the address space: either the call is refused (no cgroup)
    or the cgroup counts them and stops the program."""
    # Each memfd stays under the file-size limit (RLIMIT_FSIZE applies to memfds too); four do not.
    code = ("import os\n"
            "print(os.getuid(), flush=True)\n"
            "fds = [os.memfd_create(f'hoard-{i}') for i in range(4)]\n"
            "for fd in fds:\n"
            "    for _ in range(512):\n"
            "        os.write(fd, b'x' * (1 << 20))\n"
            "print('held 2 GiB outside the address space')")
    result = run_python(code, tmp_path, memory_bytes=1 << 30)
    assert not result.ok and "held" not in result.stdout_tail
    assert result.failure().kind in (ErrorKind.SANDBOX_VIOLATION, ErrorKind.OUT_OF_MEMORY)


@pytest.mark.skipif(cgroup_parent() is None, reason="this host has no delegable cgroup v2 (the fallback applies)")
def test_with_cgroup_v2_memfd_pages_count_against_the_job_and_its_cgroup_goes_afterwards(tmp_path):
    # A GPU run has no address-space limit; memory.max (256 MiB + the three tmpfs sizes) stops it.
    code = ("import os\n"
            "print(os.getuid(), flush=True)\n"
            "fds = [os.memfd_create(f'hoard-{i}') for i in range(4)]\n"
            "for fd in fds:\n"
            "    for _ in range(256):\n"
            "        os.write(fd, b'x' * (1 << 20))\n"
            "print('held 1 GiB in memfds')")
    result = run_python(code, tmp_path, gpu=True, memory_bytes=256 * MiB, max_shm_bytes=16 * MiB,
                        max_scratch_bytes=16 * MiB, tmp_bytes=16 * MiB)
    assert not result.ok and "held" not in result.stdout_tail
    uid = result.stdout_tail.split()[0]
    assert not (cgroup_parent() / f"job-{uid}").exists()


@root_only
def test_fallocate_past_the_scratch_size_fails_with_enospc_at_once(tmp_path):
    code = ("import errno, os, time\n"
            "fd = os.open('big.bin', os.O_CREAT | os.O_WRONLY, 0o600)\n"
            "start = time.monotonic()\n"
            "try:\n"
            "    os.posix_fallocate(fd, 0, 256 << 20)\n"
            "    print('allocated', time.monotonic() - start)\n"
            "except OSError as exc:\n"
            "    print(errno.errorcode[exc.errno], time.monotonic() - start)\n"
            "s = os.statvfs('.')\n"
            "print(s.f_blocks * s.f_frsize)")
    result = run_python(code, tmp_path, max_scratch_bytes=64 * MiB)
    assert result.ok, result.log_tail
    outcome, size = result.stdout_tail.strip().splitlines()
    code_, seconds = outcome.split()
    assert code_ == "ENOSPC" and float(seconds) < 0.5
    assert int(size) <= 64 * MiB


@root_only
def test_many_small_files_past_the_scratch_size_fail_with_enospc_and_the_run_is_a_violation(tmp_path):
    code = "for i in range(100):\n    open(f'part-{i}.bin', 'wb').write(b'x' * (1 << 20))"
    result = run_python(code, tmp_path, max_scratch_bytes=16 * MiB)
    error = result.failure()
    assert error is not None and error.kind == ErrorKind.SANDBOX_VIOLATION
    assert "No space left on device" in result.stderr_tail
    assert result.wall_s < 10


@root_only
def test_the_runner_reads_what_the_program_left_on_its_scratch_volume(tmp_path):
    result = run_python("open('out.json', 'w').write('{\"x\": 1}')", tmp_path)
    assert result.ok, result.log_tail
    assert (tmp_path / "run" / "scratch" / "out.json").read_text() == '{"x": 1}'


@root_only
def test_a_fork_bomb_in_one_job_does_not_stop_another_jobs_sandbox_from_starting(tmp_path):
    bomb = ("import os, time\n"
            "n = 0\n"
            "while True:\n"
            "    try:\n"
            "        pid = os.fork()\n"
            "    except OSError:\n"
            "        break\n"
            "    if pid == 0:\n"
            "        time.sleep(60)\n"
            "        os._exit(0)\n"
            "    n += 1\n"
            "open('full', 'w').write(f'{os.getuid()} {n}')\n"
            "time.sleep(60)")
    cancel = threading.Event()
    bombed: dict = {}
    thread = threading.Thread(target=lambda: bombed.update(result=run_python(bomb, tmp_path, name="bomb",
                                                                              max_processes=32, cancel=cancel)))
    thread.start()
    full = tmp_path / "bomb" / "scratch" / "full"
    try:
        deadline = time.monotonic() + 30
        while not full.exists() and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.1)
        assert full.exists(), "the fork bomb never reached its process limit"
        other = run_python("import os; print(os.getuid())", tmp_path, name="other", max_processes=32)
    finally:
        cancel.set()
        thread.join(30)
    assert other.ok, other.log_tail
    bomb_uid, forks = full.read_text().split()
    assert int(forks) < 32 and int(other.stdout_tail) != int(bomb_uid)
    assert {int(bomb_uid), int(other.stdout_tail)} <= set(sandbox_uids())


@root_only
def test_two_concurrent_leases_never_share_a_uid_and_a_held_uid_is_not_handed_out(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNNER_SANDBOX_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("RUNNER_SANDBOX_UIDS", "60990-60991")
    with lease_user() as first, lease_user() as second:
        assert first.uid != second.uid and {first.uid, second.uid} == {60990, 60991}
        with pytest.raises(HostLimitError, match="all 2 sandbox uids"), lease_user():
            pass
    # Another process on the host holds the only uid: this runner must wait its turn.
    monkeypatch.setenv("RUNNER_SANDBOX_UIDS", "60992")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom runner.host_limits import lease_user\n"
         "with lease_user() as user:\n    print(user.uid, flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline().strip() == "60992"
        with pytest.raises(EvaluationError) as caught:
            run_python("print('hi')", tmp_path)
        assert caught.value.kind == ErrorKind.SANDBOX_UNAVAILABLE and "in use" in caught.value.message
    finally:
        holder.kill()
        holder.wait()
    assert run_python("import os; print(os.getuid())", tmp_path, name="after").stdout_tail.strip() == "60992"


def test_the_model_servers_memory_follows_the_hosts(monkeypatch):
    from runner.serve import default_memory_bytes

    monkeypatch.delenv("RUNNER_MODEL_MEMORY_GB", raising=False)
    host = host_memory_bytes()
    assert default_memory_bytes() == max(6 << 30, host // 2)
    monkeypatch.setenv("RUNNER_MODEL_MEMORY_GB", "3")
    assert default_memory_bytes() == 3 << 30
