"""The sandbox every submitted program runs in: what it refuses, how each refusal is reported,
and that the next run is unaffected."""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from runner.host_limits import sandbox_uids
from runner.sandbox import (
    MODE_BWRAP,
    MODE_TRUSTED,
    read_scratch_file,
    run_sandboxed,
    sandbox_available,
)
from runner.spec import ErrorKind, EvaluationError

pytestmark = pytest.mark.usefixtures("bwrap")


def run_python(code: str, tmp_path: Path, name: str = "run", **options):
    options.setdefault("time_limit_s", 20)
    return run_sandboxed([sys.executable, "-I", "-c", code], scratch=tmp_path / name / "scratch", **options)


def failure_of(code: str, tmp_path: Path, **options) -> EvaluationError:
    result = run_python(code, tmp_path, **options)
    error = result.failure()
    assert error is not None, f"expected a failure, got exit 0 with {result.stdout_tail!r}"
    return error


def assert_next_run_works(tmp_path: Path) -> None:
    result = run_python("print('the next submission runs normally')", tmp_path, name="next")
    assert result.ok, result.log_tail
    assert result.stdout_tail.strip() == "the next submission runs normally"


def test_a_program_runs_as_the_unprivileged_sandbox_user_with_no_capabilities_or_network(tmp_path):
    code = ("import os, socket\n"
            "status = dict(l.split(':', 1) for l in open('/proc/self/status'))\n"
            "print(os.getuid(), status['CapEff'].strip(), status['NoNewPrivs'].strip(),"
            " [i for _, i in socket.if_nameindex()] if hasattr(socket, 'if_nameindex') else [])\n"
            "print(sorted(p for p in os.listdir('/proc') if p.isdigit()))")
    result = run_python(code, tmp_path)
    assert result.ok, result.log_tail
    assert result.mode == MODE_BWRAP
    identity, pids = result.stdout_tail.strip().splitlines()
    uid, caps, no_new_privs, interfaces = identity.split(" ", 3)
    if os.geteuid() == 0:
        assert int(uid) in sandbox_uids()  # a uid of this job's own
    else:
        assert int(uid) == os.geteuid()
    assert caps == "0000000000000000" and no_new_privs == "1"
    assert "lo" not in interfaces.replace("'lo'", "lo").split(", ")[1:]  # only loopback can exist, and it is down
    assert pids in ("['1', '2']", "['1', '2', '3']")  # a private pid namespace: bwrap's init and the program


def test_opening_a_network_connection_is_a_sandbox_violation(tmp_path):
    error = failure_of("import socket; socket.create_connection(('93.184.216.34', 80), timeout=5)", tmp_path)
    assert error.kind == ErrorKind.SANDBOX_VIOLATION
    assert "network" in error.message
    assert_next_run_works(tmp_path)


def test_resolving_a_host_name_is_a_sandbox_violation(tmp_path):
    error = failure_of("import socket; socket.getaddrinfo('pypi.org', 443)", tmp_path)
    assert error.kind == ErrorKind.SANDBOX_VIOLATION and "network" in error.message


def test_reading_etc_shadow_is_a_sandbox_violation(tmp_path):
    error = failure_of("print(open('/etc/shadow').read())", tmp_path)
    assert error.kind == ErrorKind.SANDBOX_VIOLATION
    assert "/etc/shadow" in error.message
    assert_next_run_works(tmp_path)


def test_a_host_file_outside_the_binds_does_not_exist_inside(tmp_path):
    secret = tmp_path / "someone-elses-model.pt"
    secret.write_text("weights")
    error = failure_of(f"print(open({str(secret)!r}).read())", tmp_path)
    assert error.kind == ErrorKind.SANDBOX_VIOLATION
    assert str(secret) in error.message and "does not exist in the sandbox" in error.message
    assert_next_run_works(tmp_path)


def test_a_root_only_file_inside_the_binds_stays_unreadable(tmp_path):
    shared = tmp_path / "inputs"
    shared.mkdir()
    (shared / "readable.txt").write_text("hello")
    (shared / "private.txt").write_text("the runner's secret")
    os.chmod(shared / "private.txt", 0o000)
    code = (f"print(open({str(shared / 'readable.txt')!r}).read())\n"
            f"print(open({str(shared / 'private.txt')!r}).read())")
    result = run_python(code, tmp_path, ro_binds=[shared])
    assert result.stdout_tail.strip() == "hello"
    error = result.failure()
    assert error is not None and error.kind == ErrorKind.SANDBOX_VIOLATION
    assert "Permission denied" in error.message and "the runner's secret" not in result.log_tail


def test_a_folder_bound_at_another_path_is_read_there_and_can_hide_a_folder(tmp_path):
    """(source, dest) binds: the program sees the source's files at dest (and not at the source),
    which is how the runner lays an empty folder over data it must not see."""
    given = tmp_path / "given"
    given.mkdir()
    (given / "data.txt").write_text("bound elsewhere")
    hidden = tmp_path / "shown" / "inside"
    hidden.mkdir(parents=True)
    (hidden / "answers.txt").write_text("the test labels")
    empty = tmp_path / "empty"
    empty.mkdir()
    code = (f"import os\nprint(open('/opt/leaderboard-inputs/data.txt').read())\n"
            f"print(sorted(os.listdir({str(hidden)!r})))\n"
            f"print(os.path.exists({str(given)!r}))")
    result = run_python(code, tmp_path, ro_binds=[(given, "/opt/leaderboard-inputs"), tmp_path / "shown",
                                                  (empty, hidden)])
    assert result.ok, result.log_tail
    assert result.stdout_tail.split("\n")[:3] == ["bound elsewhere", "[]", "False"]


def test_writing_outside_scratch_is_a_sandbox_violation_and_changes_nothing(tmp_path):
    shared = tmp_path / "inputs"
    shared.mkdir()
    (shared / "submission.py").write_text("original")
    for target in (shared / "submission.py", Path("/evil.txt"), Path(sys.prefix) / "evil.txt"):
        error = failure_of(f"open({str(target)!r}, 'w').write('tampered')", tmp_path, ro_binds=[shared])
        assert error.kind == ErrorKind.SANDBOX_VIOLATION, error.message
        # Every target lies on a read-only mount (EROFS), never merely another user's file (EACCES).
        assert "tried to write outside its scratch folder" in error.message, error.message
    assert (shared / "submission.py").read_text() == "original"
    assert not Path("/evil.txt").exists() and not (Path(sys.prefix) / "evil.txt").exists()
    assert_next_run_works(tmp_path)


def test_a_program_writes_its_scratch_folder_and_the_runner_reads_the_file(tmp_path):
    result = run_python("open('out.json', 'w').write('{\"x\": 1}')", tmp_path)
    assert result.ok, result.log_tail
    assert read_scratch_file(tmp_path / "run" / "scratch", "out.json") == b'{"x": 1}'


def test_a_symlink_planted_in_scratch_is_never_followed_by_the_runner(tmp_path):
    result = run_python("import os; os.symlink('/etc/shadow', 'out.json')", tmp_path)
    assert result.ok, result.log_tail
    with pytest.raises(EvaluationError) as caught:
        read_scratch_file(tmp_path / "run" / "scratch", "out.json")
    assert caught.value.kind == ErrorKind.SANDBOX_VIOLATION


def test_a_fork_bomb_hits_the_process_limit_and_leaves_no_process_behind(tmp_path):
    bomb = "import os\nwhile True:\n    os.fork()"
    error = failure_of(bomb, tmp_path, max_processes=32)
    assert error.kind == ErrorKind.SANDBOX_VIOLATION
    assert "too many processes" in error.message
    assert_next_run_works(tmp_path)


def test_a_program_past_its_time_limit_is_stopped_with_a_timeout_even_with_children(tmp_path):
    code = ("import os, time\n"
            "for _ in range(5):\n"
            "    if os.fork() == 0:\n"
            "        os.setsid()\n"
            "        break\n"
            "time.sleep(60)")
    result = run_python(code, tmp_path, time_limit_s=1.5)
    assert result.timed_out and result.wall_s < 10
    error = result.failure()
    assert error.kind == ErrorKind.TIMEOUT and "1 s" in error.message
    assert_next_run_works(tmp_path)


def test_a_program_past_its_cpu_time_limit_is_stopped_with_a_timeout(tmp_path):
    error = failure_of("while True:\n    pass", tmp_path, time_limit_s=30, cpu_time_s=1)
    assert error.kind == ErrorKind.TIMEOUT and "CPU time" in error.message
    assert_next_run_works(tmp_path)


def test_allocating_past_the_memory_limit_is_out_of_memory(tmp_path):
    error = failure_of("block = bytearray(3 * 1024 ** 3)", tmp_path, memory_bytes=1 << 30)
    assert error.kind == ErrorKind.OUT_OF_MEMORY and "1.0 GiB" in error.message
    assert_next_run_works(tmp_path)


def test_a_gpu_run_has_no_address_space_limit_since_cuda_reserves_huge_ranges(tmp_path):
    code = "import mmap; m = mmap.mmap(-1, 3 * 1024 ** 3); print(len(m))"
    assert failure_of(code, tmp_path, memory_bytes=1 << 30).kind == ErrorKind.OUT_OF_MEMORY
    result = run_python(code, tmp_path, name="gpu", memory_bytes=1 << 30, gpu=True)
    assert result.ok and result.limits["memory_bytes"] is None, result.log_tail


def test_a_file_past_the_size_limit_is_a_sandbox_violation(tmp_path):
    error = failure_of("with open('big.bin', 'wb') as fh:\n    fh.write(b'x' * 4096)", tmp_path, max_file_bytes=1024)
    assert error.kind == ErrorKind.SANDBOX_VIOLATION and "larger than the limit" in error.message


def test_filling_the_scratch_folder_with_many_small_files_is_stopped_as_a_sandbox_violation(tmp_path):
    code = ("import time\n"
            "for i in range(10000):\n"
            "    open(f'part-{i}.bin', 'wb').write(b'x' * 65536)\n"
            "    time.sleep(0.001)")
    error = failure_of(code, tmp_path, max_scratch_bytes=1 << 20)
    # A root runner's scratch is a tmpfs of that size (ENOSPC at once); otherwise the guard stops it.
    assert error.kind == ErrorKind.SANDBOX_VIOLATION and "scratch" in error.message
    assert_next_run_works(tmp_path)


def test_filling_tmp_is_a_sandbox_violation(tmp_path):
    code = "for i in range(10):\n    open(f'/tmp/part-{i}.bin', 'wb').write(b'x' * 32768)"
    error = failure_of(code, tmp_path, max_file_bytes=65536)
    assert error.kind == ErrorKind.SANDBOX_VIOLATION and "filled the space" in error.message


def test_a_program_that_raises_is_a_runtime_error_naming_the_exception(tmp_path):
    error = failure_of("raise ValueError('my optimizer is confused')", tmp_path)
    assert error.kind == ErrorKind.RUNTIME_ERROR
    assert "ValueError: my optimizer is confused" in error.message


def test_a_program_cannot_pass_its_crash_off_as_a_sandbox_start_failure(tmp_path):
    error = failure_of("import sys; sys.stderr.write('bwrap: Can\\'t mount proc\\n'); sys.exit(1)", tmp_path)
    assert error.kind == ErrorKind.RUNTIME_ERROR


def test_cancelling_a_run_stops_the_program_at_once(tmp_path):
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    result = run_python("import time; time.sleep(60)", tmp_path, cancel=cancel)
    assert result.cancelled and result.wall_s < 10
    assert result.failure().kind == ErrorKind.LEASE_EXPIRED


def test_the_environment_is_cleared_so_no_runner_secret_reaches_the_program(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNNER_TOKEN", "super-secret-runner-token")
    result = run_python("import os; print(sorted(os.environ))", tmp_path)
    assert "RUNNER_TOKEN" not in result.stdout_tail and "super-secret" not in result.stdout_tail
    assert "'OMP_NUM_THREADS'" in result.stdout_tail


def test_without_bubblewrap_untrusted_code_is_refused_and_trusted_code_runs_plainly(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNNER_BWRAP", str(tmp_path / "no-such-bwrap"))
    try:
        status = sandbox_available(refresh=True)
        assert not status.available and "not installed" in status.detail
        with pytest.raises(EvaluationError) as caught:
            run_python("print('hi')", tmp_path)
        assert caught.value.kind == ErrorKind.SANDBOX_UNAVAILABLE
        result = run_python("print('hi')", tmp_path, trust=True)
        assert result.ok and result.mode == MODE_TRUSTED and result.stdout_tail.strip() == "hi"
    finally:
        monkeypatch.undo()
        assert sandbox_available(refresh=True).available
