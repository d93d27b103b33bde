"""Limits that hold for the whole host, not just inside one sandbox: a uid of its own per job, a
scratch volume whose size the kernel enforces, and a cgroup v2 that accounts all of a job's
memory where the host offers one.

- **A uid per job.** RLIMIT_NPROC counts every process of a uid on the host, so jobs that shared
  one uid could starve each other. A root runner leases a uid from ``RUNNER_SANDBOX_UIDS``
  (default ``60000-60999``; its gid is the same number) for each run: an exclusive ``flock`` on
  ``<RUNNER_SANDBOX_LOCK_DIR>/<uid>.lock`` (default ``/run/lock/leaderboard-sandbox``) held while
  the run lasts, so two jobs, of one runner process or of several on the host, never share a uid;
  a uid that still owns a process is passed over. The kernel drops the lock if the runner dies.
- **Scratch on a sized tmpfs.** A root runner mounts a tmpfs of ``max_scratch_bytes`` (and at most
  ``max_entries`` inodes) over the empty scratch folder, owned by the job's uid: a write or
  ``fallocate`` past it fails with ENOSPC at once. tmpfs rather than a loop-mounted image: no
  track needs more than a few GiB of scratch, loop devices are missing in most containers, and a
  cgroup charges tmpfs pages to the job. The mount outlives the run (the runner reads what the
  program wrote); ``unmount_under`` removes it with the job folder.
- **Memory in a cgroup v2.** Where ``/sys/fs/cgroup`` is a cgroup v2 hierarchy with the memory and
  pids controllers and a root runner can create ``RUNNER_CGROUP`` (default
  ``/sys/fs/cgroup/leaderboard-sandbox``), each run gets a child cgroup with ``memory.max``,
  ``memory.swap.max = 0`` and ``pids.max``: anonymous memory, tmpfs, memfds and page cache all
  count. Elsewhere (cgroup v1, a container whose cgroup cannot delegate, a non-root runner) the
  fallback is the address-space rlimit, sized tmpfs mounts for /tmp, /dev/shm and scratch, and a
  seccomp rule that refuses ``memfd_create`` (see runner/syscall_filter.py).
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import functools
import logging
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

GiB = 1 << 30
DEFAULT_UIDS = "60000-60999"
DEFAULT_LOCK_DIR = "/run/lock/leaderboard-sandbox"
DEFAULT_CGROUP = "/sys/fs/cgroup/leaderboard-sandbox"
CGROUP_ROOT = Path("/sys/fs/cgroup")


class HostLimitError(RuntimeError):
    """A host-wide limit could not be set up (no free uid, a mount refused): the runner's fault,
    never the submission's."""


# --------------------------------------------------------------------------------------------
# Host memory.
# --------------------------------------------------------------------------------------------
def host_memory_bytes(meminfo: str = "/proc/meminfo") -> int:
    """MemTotal of this host in bytes (from /proc/meminfo, which reports kB)."""
    with open(meminfo) as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise HostLimitError(f"{meminfo} has no MemTotal line")


# --------------------------------------------------------------------------------------------
# A uid per job.
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SandboxUser:
    uid: int
    gid: int


def sandbox_uids() -> range:
    """The uids a root runner hands to its jobs: ``RUNNER_SANDBOX_UIDS`` as ``first-last``
    (inclusive) or a single uid. Raises HostLimitError for a malformed or root-including range."""
    text = os.environ.get("RUNNER_SANDBOX_UIDS", DEFAULT_UIDS).strip()
    first, _, last = text.partition("-")
    try:
        uids = range(int(first), int(last or first) + 1)
    except ValueError as exc:
        raise HostLimitError(f"RUNNER_SANDBOX_UIDS={text!r} is not a uid or a range like 60000-60999") from exc
    if not uids or uids.start <= 0:
        raise HostLimitError(f"RUNNER_SANDBOX_UIDS={text!r} must be a non-empty range of uids above 0")
    return uids


def _uids_with_processes() -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                found.add(os.stat(f"/proc/{entry}").st_uid)
    return found


@contextlib.contextmanager
def lease_user() -> Iterator[SandboxUser]:
    """A uid (and gid) no other job on this host holds while the block runs.

    A runner that is not root cannot switch users: it yields its own uid (and its jobs share the
    process limit). Raises HostLimitError when every uid of the range is leased or busy."""
    if os.geteuid() != 0:
        yield SandboxUser(os.getuid(), os.getgid())
        return
    uids = sandbox_uids()
    lock_dir = Path(os.environ.get("RUNNER_SANDBOX_LOCK_DIR", DEFAULT_LOCK_DIR))
    lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    busy = _uids_with_processes()
    start = random.randrange(len(uids))  # spread leases: a just-released uid is rarely reused at once
    for i in range(len(uids)):
        uid = uids[(start + i) % len(uids)]
        if uid in busy:
            continue
        fd = os.open(lock_dir / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield SandboxUser(uid, uid)
        finally:
            os.close(fd)  # releases the lock
        return
    raise HostLimitError(f"all {len(uids)} sandbox uids ({uids.start}-{uids.stop - 1}, RUNNER_SANDBOX_UIDS) are "
                         "in use by other jobs or still own processes")


# --------------------------------------------------------------------------------------------
# Mounts (root only).
# --------------------------------------------------------------------------------------------
MS_NOSUID, MS_NODEV, MS_REMOUNT = 0x2, 0x4, 0x20
MNT_DETACH = 0x2


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def can_mount() -> bool:
    return os.geteuid() == 0


def mount_scratch(path: Path | str, *, size_bytes: int, max_entries: int, user: SandboxUser) -> None:
    """Mount a tmpfs of ``size_bytes`` and ``max_entries`` inodes at ``path`` (an empty folder),
    owned by ``user`` with mode 0700; remount with the new size where one is mounted already.
    Raises HostLimitError when the folder is not empty or the kernel refuses."""
    path = os.fspath(path)
    options = f"size={size_bytes},nr_inodes={max_entries},mode=0700,uid={user.uid},gid={user.gid}"
    try:
        if os.path.ismount(path):
            _check(_libc().mount(b"tmpfs", path.encode(), b"tmpfs", MS_REMOUNT | MS_NOSUID | MS_NODEV,
                                 options.encode()), f"remounting the scratch tmpfs at {path}")
            os.chown(path, user.uid, user.gid)
            return
        if os.listdir(path):
            raise HostLimitError(f"the scratch folder {path} is not empty; a scratch volume is mounted over an "
                                 "empty folder only")
        _check(_libc().mount(b"tmpfs", path.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options.encode()),
               f"mounting a scratch tmpfs at {path}")
    except OSError as exc:
        raise HostLimitError(str(exc)) from exc


def _unescape(field: str) -> str:
    # /proc/self/mountinfo writes space, tab, newline and backslash as \ooo.
    return field.encode().decode("unicode_escape").encode("latin-1").decode("utf-8", "replace")


def mounts_under(root: Path | str) -> list[str]:
    """Mount points at or below ``root`` in this mount namespace, deepest first."""
    root = os.path.realpath(root).rstrip("/") or "/"
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            point = _unescape(line.split(" ")[4])
            if point == root or point.startswith(root + "/"):
                found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def unmount_under(root: Path | str) -> None:
    """Detach every mount at or below ``root`` (a job folder about to be removed). Never raises:
    a failure is logged, and the folder's removal goes on."""
    if not can_mount() or not os.path.exists(root):
        return
    try:
        points = mounts_under(root)
    except OSError as exc:
        log.warning("could not list the mounts under %s: %s", root, exc)
        return
    for point in points:
        if _libc().umount2(point.encode(), MNT_DETACH) != 0:
            code = ctypes.get_errno()
            if code not in (errno.EINVAL, errno.ENOENT):
                log.warning("could not unmount %s: %s", point, os.strerror(code))


# --------------------------------------------------------------------------------------------
# cgroup v2.
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def cgroup_parent() -> Path | None:
    """The cgroup v2 folder job cgroups are created under, with memory and pids enabled for its
    children, or None where this host offers none (then the fallback applies). Probed once."""
    configured = os.environ.get("RUNNER_CGROUP", "")
    if configured == "off" or os.geteuid() != 0 or not (CGROUP_ROOT / "cgroup.controllers").exists():
        return None
    parent = Path(configured or DEFAULT_CGROUP)
    try:
        parent.mkdir(exist_ok=True)
        needed = {"memory", "pids"}
        if not needed <= set((parent / "cgroup.controllers").read_text().split()):
            # Enable them for the parent first (works when its own parent holds no processes).
            (parent.parent / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in sorted(needed)))
        enabled = set((parent / "cgroup.subtree_control").read_text().split())
        if not needed <= enabled:
            (parent / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in sorted(needed - enabled)))
    except OSError as exc:
        log.info("no cgroup v2 memory accounting at %s (%s): using the address-space limit and sized tmpfs "
                 "mounts instead", parent, exc)
        return None
    return parent


@dataclass
class JobCgroup:
    path: Path

    @property
    def procs(self) -> Path:
        """Write "0" here to move the writing process into the cgroup."""
        return self.path / "cgroup.procs"

    def oom_kills(self) -> int:
        """How many processes of the job the kernel killed for reaching memory.max."""
        with contextlib.suppress(OSError):
            for line in (self.path / "memory.events").read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "oom_kill":
                    return int(value)
        return 0

    def remove(self) -> None:
        """Kill whatever is left in the cgroup and remove it."""
        with contextlib.suppress(OSError):
            (self.path / "cgroup.kill").write_text("1")
        for _ in range(100):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.05)
        log.warning("could not remove the job cgroup %s", self.path)


def create_job_cgroup(user: SandboxUser, *, memory_bytes: int, max_processes: int) -> JobCgroup | None:
    """A fresh cgroup for one run of ``user`` (the uid names it: a uid is leased to one job at a
    time), or None where cgroup v2 accounting is unavailable. ``memory_bytes`` bounds everything the
    job keeps in memory, tmpfs and memfds included; swap is off."""
    parent = cgroup_parent()
    if parent is None:
        return None
    group = JobCgroup(parent / f"job-{user.uid}")
    if group.path.exists():
        group.remove()  # left by a runner that died
    try:
        group.path.mkdir()
        (group.path / "memory.max").write_text(str(memory_bytes))
        if (group.path / "memory.swap.max").exists():
            (group.path / "memory.swap.max").write_text("0")
        (group.path / "pids.max").write_text(str(max_processes))
    except OSError as exc:
        group.remove()
        raise HostLimitError(f"could not set up the job cgroup {group.path}: {exc}") from exc
    return group
