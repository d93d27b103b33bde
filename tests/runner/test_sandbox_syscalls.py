"""The seccomp filter of the sandbox: every refused system call, tried by a tiny program through the
real sandbox, fails with EPERM (clone3 with ENOSYS, so glibc falls back to clone), and the
program goes on running.

The program passes 1 for every argument: a bad pointer or value, so the same call made without
the filter fails with EFAULT, EINVAL or ENOSYS (or succeeds) rather than EPERM. A few calls
(pivot_root, reboot, swapon, ...) are refused by the kernel with EPERM already, for lack of a
capability; for those the filter is a second wall and test_the_filter_refuses_every_listed_call
checks it is in the program."""
from __future__ import annotations

import errno
import sys
import tempfile
from pathlib import Path

import pyseccomp
import pytest

from runner.host_limits import cgroup_parent
from runner.sandbox import run_sandboxed
from runner.syscall_filter import CLONE_NAMESPACE_FLAGS, DENIED, ENOSYS_CALLS, build_rules, filter_program

pytestmark = pytest.mark.usefixtures("bwrap")

ALWAYS_DENIED = [call for group in DENIED.values() for call in group]
SIGCHLD = 17


def try_syscall(tmp_path: Path, name: str, args: tuple[int, ...] = (1, 1, 1, 1, 1), **options) -> tuple[int, int]:
    """(return value, errno) of system call ``name`` made from inside the sandbox."""
    number = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)
    if number < 0:
        pytest.skip(f"{name} does not exist on this architecture")
    code = ("import ctypes, os\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "libc.syscall.restype = ctypes.c_long\n"
            f"result = libc.syscall({number}, *[ctypes.c_long(a) for a in {list(args)!r}])\n"
            "if result == 0 and os.getpid() != 2:\n"
            "    os._exit(0)  # a clone the kernel allowed: the copy leaves at once\n"
            "print(result, ctypes.get_errno(), flush=True)\n")
    options.setdefault("time_limit_s", 20)
    result = run_sandboxed([sys.executable, "-I", "-c", code], scratch=tmp_path / name / "scratch", **options)
    assert result.ok, result.log_tail
    value, code_ = result.stdout_tail.split()[:2]
    return int(value), int(code_)


@pytest.mark.parametrize("name", ALWAYS_DENIED)
def test_a_refused_system_call_fails_with_eperm_and_the_program_goes_on(tmp_path, name):
    assert try_syscall(tmp_path, name) == (-1, errno.EPERM)


def test_clone3_fails_with_enosys_so_threads_fall_back_to_clone(tmp_path):
    assert try_syscall(tmp_path, "clone3") == (-1, errno.ENOSYS)
    code = ("import threading\n"
            "threads = [threading.Thread(target=sum, args=([1, 2],)) for _ in range(8)]\n"
            "[t.start() for t in threads]; [t.join() for t in threads]; print('threads ran')")
    result = run_sandboxed([sys.executable, "-I", "-c", code], scratch=tmp_path / "threads" / "scratch",
                           time_limit_s=20)
    assert result.ok and "threads ran" in result.stdout_tail, result.log_tail


@pytest.mark.parametrize("flag", sorted(CLONE_NAMESPACE_FLAGS))
def test_clone_into_a_new_namespace_fails_with_eperm(tmp_path, flag):
    assert try_syscall(tmp_path, "clone", (CLONE_NAMESPACE_FLAGS[flag] | SIGCHLD, 0, 0, 0, 0)) == (-1, errno.EPERM)


def test_ptrace_of_the_sandboxs_pid_1_is_refused(tmp_path):
    ptrace_seize = 0x4206
    assert try_syscall(tmp_path, "ptrace", (ptrace_seize, 1, 0, 0)) == (-1, errno.EPERM)


def test_a_plain_fork_still_works_under_the_filter(tmp_path):
    code = ("import os\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    os._exit(7)\n"
            "print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))")
    result = run_sandboxed([sys.executable, "-I", "-c", code], scratch=tmp_path / "fork" / "scratch", time_limit_s=20)
    assert result.ok and result.stdout_tail.strip() == "7", result.log_tail


def test_memfd_create_is_refused_only_where_no_cgroup_counts_its_memory(tmp_path):
    """memfd pages sit outside the address space: where no cgroup accounts them, the filter
    refuses the call; a GPU run has no address-space limit to escape, so it may use memfds."""
    value, code = try_syscall(tmp_path, "memfd_create", (0, 0))
    if cgroup_parent() is None:
        assert (value, code) == (-1, errno.EPERM)
    else:
        assert value >= 0
    assert try_syscall(tmp_path / "gpu", "memfd_create", (0, 0), gpu=True)[1] != errno.EPERM


def test_the_sandboxed_program_runs_under_one_seccomp_filter(tmp_path):
    code = "print([l.split()[1] for l in open('/proc/self/status') if l.startswith(('Seccomp:', 'Seccomp_filters:'))])"
    result = run_sandboxed([sys.executable, "-I", "-c", code], scratch=tmp_path / "status" / "scratch", time_limit_s=20)
    assert result.ok, result.log_tail
    assert result.stdout_tail.strip() == "['2', '1']"  # 2: filter mode


@pytest.mark.parametrize("deny_memfd", [False, True])
def test_the_filter_refuses_every_listed_call(deny_memfd):
    """The compiled program, disassembled by libseccomp: each listed call returns EPERM (clone3:
    ENOSYS), memfd_create only when asked."""
    assert filter_program(deny_memfd=deny_memfd)  # compiles
    with tempfile.TemporaryFile("w+") as out:
        build_rules(deny_memfd=deny_memfd).export_pfc(out)
        out.seek(0)
        text = out.read()
    for call in ALWAYS_DENIED:
        if pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, call) >= 0:
            assert f"# filter for syscall \"{call}\"" in text, call
    assert ("memfd_create" in text) == deny_memfd
    assert f"ERRNO({errno.ENOSYS})" in text and f"ERRNO({errno.EPERM})" in text
    assert all(c in text for c in ENOSYS_CALLS)


def test_a_program_can_still_use_numpy_threads_and_files_under_the_filter(tmp_path):
    code = ("import numpy, os, tempfile\n"
            "a = numpy.random.default_rng(0).random((256, 256)); b = a @ a.T\n"
            "with tempfile.NamedTemporaryFile(dir='/tmp') as fh: fh.write(b'x' * 4096)\n"
            "print(round(float(b.trace()), 3) > 0, os.cpu_count() >= 1)")
    result = run_sandboxed([sys.executable, "-I", "-c", code], scratch=tmp_path / "numpy" / "scratch", time_limit_s=60)
    assert result.ok and result.stdout_tail.strip() == "True True", result.log_tail

