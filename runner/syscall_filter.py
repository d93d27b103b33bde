"""The seccomp filter every sandboxed program runs under: the system calls it is refused.

bwrap installs the filter (``--seccomp FD``, a compiled classic-BPF program) on the program just
before it runs, after bwrap has built the sandbox, so bwrap itself is not filtered. The program is
built by libseccomp (through the ``pyseccomp`` ctypes bindings; the shared library ``libseccomp.so.2``
ships with every Debian and Ubuntu system because apt and systemd use it).

Everything not listed is allowed: this narrows the kernel's attack surface and stops calls that
reach outside the job (other processes, the kernel keyring, namespaces and mounts, kernel
modules), not general computation. A refused call fails with EPERM, never a kill, so a library
that probes for a feature (io_uring, perf counters, userfaultfd) degrades gracefully.

Two exceptions to EPERM:
- ``clone3`` fails with ENOSYS: its flags live in a struct the filter cannot read, and glibc falls
  back to ``clone`` (whose flags the filter does check) only on ENOSYS; EPERM would break threads.
- ``memfd_create`` is refused only when asked (``deny_memfd``): where no cgroup accounts the
  job's memory, pages of a memfd escape the address-space limit. Where a cgroup counts them, it is
  allowed.
"""
from __future__ import annotations

import errno
import functools
import os
import tempfile

# Namespace flags a clone() may not carry (linux/sched.h).
CLONE_NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}

# Refused with EPERM, grouped by why.
DENIED = {
    "asynchronous I/O that bypasses the filter": ("io_uring_setup", "io_uring_enter", "io_uring_register"),
    "the kernel keyring": ("add_key", "request_key", "keyctl"),
    "other processes' memory and state": ("ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
                                          "pidfd_getfd"),
    "kernel features with a record of exploits": ("userfaultfd", "bpf", "perf_event_open"),
    "namespaces and mounts": ("unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "move_mount",
                              "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr"),
    "the kernel itself": ("kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
                          "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog", "iopl", "ioperm",
                          "open_by_handle_at", "name_to_handle_at", "lookup_dcookie", "fanotify_init"),
}
ENOSYS_CALLS = ("clone3",)
MEMFD_CALLS = ("memfd_create",)


def denied_calls(*, deny_memfd: bool) -> tuple[str, ...]:
    """Every system call the filter refuses (EPERM, or ENOSYS for ``ENOSYS_CALLS``)."""
    calls = [c for group in DENIED.values() for c in group] + list(ENOSYS_CALLS)
    return tuple(calls + list(MEMFD_CALLS if deny_memfd else ()))


class FilterUnavailable(RuntimeError):
    """libseccomp or its Python bindings are missing: the sandbox must not start without its filter."""


def build_rules(*, deny_memfd: bool):
    """The filter as a libseccomp ``SyscallFilter`` (compile it with ``filter_program``).

    Raises FilterUnavailable when libseccomp cannot be loaded."""
    try:
        import pyseccomp as seccomp
    except (ImportError, OSError) as exc:  # OSError: the bindings load libseccomp.so.2 at import
        raise FilterUnavailable("the seccomp filter needs libseccomp (apt install libseccomp2) and its Python "
                                f"bindings (pip install pyseccomp): {exc}") from exc
    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    for call in denied_calls(deny_memfd=deny_memfd):
        action = errno.ENOSYS if call in ENOSYS_CALLS else errno.EPERM
        _add(seccomp, rules, seccomp.ERRNO(action), call)
    for flag in CLONE_NAMESPACE_FLAGS.values():
        _add(seccomp, rules, seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    return rules


@functools.lru_cache(maxsize=2)
def filter_program(*, deny_memfd: bool) -> bytes:
    """The compiled filter: classic BPF, as ``bwrap --seccomp`` reads it (well under 1 KiB).

    Raises FilterUnavailable when libseccomp cannot be loaded."""
    with tempfile.TemporaryFile() as out:
        build_rules(deny_memfd=deny_memfd).export_bpf(out)
        out.seek(0)
        return out.read()


def _add(seccomp, rules, action: int, call: str, *args) -> None:
    # A call this architecture lacks (iopl on arm64, say) resolves to a negative number: skip it.
    if seccomp.resolve_syscall(seccomp.Arch.NATIVE, call) < 0:
        return
    rules.add_rule(action, call, *args)


def filter_fd(*, deny_memfd: bool) -> int:
    """A readable fd holding the compiled filter, for ``bwrap --seccomp FD``; the caller closes it.
    A pipe is enough: the program is far smaller than a pipe's buffer."""
    program = filter_program(deny_memfd=deny_memfd)
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, program)
    finally:
        os.close(write_end)
    return read_end
