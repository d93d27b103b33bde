"""The one way submitted code runs: a bubblewrap sandbox, as an unprivileged user, with rlimits and
a wall-clock timeout. Everything it returns is data; failures become spec.EvaluationError kinds.
It is one piece past 450 lines because it is one security boundary: the layers below, the limits
each enforces, the supervision of a run and the reading of how it ended refer to one another, and
a reviewer checks what a submission can do by reading them together (the host-wide limits are
runner/host_limits.py's, the seccomp filter runner/syscall_filter.py's).

Layout of one sandboxed run (the runner is usually root on a GPU box):

    sh: joins the job's cgroup v2 (memory.max, pids.max) where the host has one (runner/host_limits.py)
    └ prlimit (CPU, processes, open files, file size, address space on CPU, no core files)
      └ bwrap, privileged "staging" layer, root only: builds a mount namespace that holds exactly
        the bound paths, each at its own path, with world-traversable parents (0755). This is
        what lets an unprivileged user reach an interpreter under root's 0700 home.
          └ setpriv: drop to the job's own uid/gid (leased from RUNNER_SANDBOX_UIDS for this run only,
            so the process limit counts this job alone), no groups, no capabilities, no_new_privs
            └ bwrap, unprivileged: --unshare-all (network, pid, ipc, uts, cgroup, user),
              --disable-userns, --cap-drop ALL, --new-session, --die-with-parent, --clearenv,
              read-only binds, one writable scratch dir, fresh /proc and /dev, sized tmpfs mounts
              for /tmp and /dev/shm, a seccomp filter (runner/syscall_filter.py)
                └ python -I -S trampoline: marks "the sandbox started" on a private fd, closes
                  it, execs the program

A root runner mounts a sized tmpfs over the scratch folder first (the kernel enforces its size;
it stays mounted until the job folder is removed, see host_limits.unmount_under).

A runner that is not root skips the staging layer, setpriv, the scratch volume and the cgroup: its
own uid is unprivileged, and the once-a-second scratch guard is what bounds scratch. A
root runner without the privileges the staging layer needs (CAP_SYS_ADMIN) falls back to setpriv
and the unprivileged bwrap alone ("direct"), which works when the sandbox uid can traverse to
the interpreter and to every bound path; the probe finds out which layout works.

bwrap 0.8's --ro-bind-fd does not help with the 0700 home: it turns the fd back into a path and
resolves that path as the unprivileged user, which cannot traverse /root.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import io
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

from runner import host_limits, workdir
from runner.host_limits import HostLimitError, SandboxUser
from runner.sandboxed.rules import says_out_of_memory
from runner.spec import ErrorKind, EvaluationError
from runner.syscall_filter import FilterUnavailable, filter_fd

# A (source, dest) read-only bind: the program sees source's files at dest.
ReadOnlyBind = tuple[Path | str, Path | str]

MODE_BWRAP = "bwrap"
MODE_TRUSTED = "none (trusted)"

GiB = 1 << 30
DEFAULT_MEMORY_BYTES = 8 * GiB  # torch needs at least 4 GiB of address space just to import
DEFAULT_MAX_PROCESSES = 128  # counts threads too, for every process of the job's own uid
DEFAULT_MAX_OPEN_FILES = 1024
DEFAULT_MAX_FILE_BYTES = 1 * GiB
DEFAULT_MAX_SCRATCH_BYTES = 4 * GiB  # the whole scratch folder (a tmpfs of this size under a root runner)
DEFAULT_MAX_SHM_BYTES = 512 << 20  # /dev/shm, a tmpfs (bwrap's /dev alone would offer half the host's memory)
MAX_SCRATCH_ENTRIES = 100_000
TAIL_BYTES = 16 * 1024
START_MARKER = b"S"

# Threads, caches and locale for a cleared environment; HOME and the caches land on the tmpfs.
BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "USER": "sandbox",
    "LOGNAME": "sandbox",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
}
# Mount points the sandbox creates itself; never re-create or chmod them.
_OWN_MOUNTS = ("/proc", "/dev", "/tmp")
_GPU_DEVICE_GLOBS = ("nvidia[0-9]*", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")


def _tool(name: str) -> str | None:
    return shutil.which(name, path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")


def bwrap_path() -> str | None:
    """RUNNER_BWRAP names a bwrap outside PATH (e.g. unpacked with dpkg -x on a GPU box)."""
    configured = os.environ.get("RUNNER_BWRAP")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return _tool("bwrap")


# --------------------------------------------------------------------------------------------
# Result and failure classification.
# --------------------------------------------------------------------------------------------
@dataclass
class SandboxResult:
    returncode: int
    stdout_tail: str
    stderr_tail: str
    timed_out: bool
    wall_s: float
    mode: str
    limits: dict[str, int | None]
    cancelled: bool = False
    violation: str = ""  # a limit the runner enforced by stopping the program
    oom_kills: int = 0  # processes the kernel killed at the job cgroup's memory.max (cgroup v2 only)
    writable: tuple[str, ...] = ()
    readable: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.cancelled and not self.violation

    @property
    def signal(self) -> int | None:
        """The signal that ended the program, if one did (bwrap reports it as 128 + n)."""
        if self.returncode < 0:
            return -self.returncode
        if self.mode == MODE_BWRAP and 128 < self.returncode <= 128 + 64:
            return self.returncode - 128
        return None

    @property
    def log_tail(self) -> str:
        parts = [p for p in (self.stdout_tail.strip(), self.stderr_tail.strip()) if p]
        return "\n".join(parts)[-TAIL_BYTES:]

    def failure(self) -> EvaluationError | None:
        """The EvaluationError this run amounts to, or None when it exited cleanly."""
        if self.ok:
            return None
        return _classify(self)


_VIOLATIONS = (
    (re.compile(r"Network is unreachable|Errno 101\]|gaierror|Name or service not known|"
                r"Temporary failure in name resolution|Address family not supported|Errno 99\]"),
     "tried to use the network, which the sandbox does not have"),
    (re.compile(r"BlockingIOError|Resource temporarily unavailable|Errno 11\]|can't start new thread|"
                r"pthread_create failed"),
     "started too many processes or threads: the sandbox allows {max_processes} at once, threads included"),
    (re.compile(r"Read-only file system|Errno 30\]"),
     "tried to write outside its scratch folder; everything else is read-only"),
    (re.compile(r"PermissionError|Permission denied|Errno 13\]|Operation not permitted|Errno 1\]"),
     "was refused access to a file or operation outside what the sandbox allows"),
    (re.compile(r"File too large|Errno 27\]"),
     "wrote a file larger than the limit of {max_file_bytes} bytes"),
    (re.compile(r"Too many open files|Errno 24\]"),
     "opened more than {max_open_files} files at once"),
    (re.compile(r"No space left on device|Errno 28\]"),
     "filled the space it may write (scratch, or /tmp limited to {max_file_bytes} bytes)"),
)
_MISSING_FILE = re.compile(r"(?:FileNotFoundError|No such file or directory)[^\n]*?'(/[^'\n]*)'")


def _last_error_line(text: str) -> str:
    """The program's last exception line (control characters escaped: it is the program's text)."""
    from runner.untrusted import printable

    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^[\w.]+(Error|Exception|Exit|Interrupt)\b", line) or line.startswith("bwrap:"):
            return printable(line[:500])
    return printable((lines[-1] if lines else "")[:500])


def _outside(path: str, result: SandboxResult) -> bool:
    visible = (*result.readable, *result.writable)
    return not any(path == v or path.startswith(v.rstrip("/") + "/") for v in visible)


def _classify(result: SandboxResult) -> EvaluationError:
    from runner.untrusted import printable

    limits = result.limits
    tail = result.log_tail
    stderr = result.stderr_tail
    if result.cancelled:
        return EvaluationError(ErrorKind.LEASE_EXPIRED, "stopped: the site took the job back", tail)
    if result.timed_out:
        return EvaluationError(ErrorKind.TIMEOUT, f"ran past its time limit of {limits.get('time_limit_s')} s "
                               "and was stopped", tail)
    if result.violation:
        return EvaluationError(ErrorKind.SANDBOX_VIOLATION, f"the submission {result.violation} and was stopped", tail)
    if result.oom_kills:
        memory = limits.get("memory_max_bytes") or 0
        return EvaluationError(ErrorKind.OUT_OF_MEMORY, f"the kernel killed the program for using more than its "
                               f"memory limit of {memory / GiB:.1f} GiB (memory, /tmp, /dev/shm and scratch "
                               "together)", tail)
    sig = result.signal
    if sig == signal.SIGXCPU:
        return EvaluationError(ErrorKind.TIMEOUT, f"used more than {limits.get('cpu_time_s')} s of CPU time "
                               "and was stopped", tail)
    if says_out_of_memory(stderr):  # the programs' own rule (runner/sandboxed/rules.py)
        address_space = limits.get("memory_bytes")
        where = f" (limit {address_space / GiB:.1f} GiB of address space)" if address_space else ""
        return EvaluationError(ErrorKind.OUT_OF_MEMORY, f"ran out of memory{where}: {_last_error_line(stderr)}",
                               tail)
    for pattern, what in _VIOLATIONS:
        if pattern.search(stderr):
            return EvaluationError(ErrorKind.SANDBOX_VIOLATION,
                                   f"the submission {what.format(**limits)}: {_last_error_line(stderr)}", tail)
    missing = [m for m in _MISSING_FILE.findall(stderr) if _outside(m, result)]
    if missing:
        return EvaluationError(ErrorKind.SANDBOX_VIOLATION,
                               f"the submission tried to open {printable(missing[-1])}, which does not exist in the "
                               "sandbox: "
                               "submitted code sees only its own files and its scratch folder", tail)
    if sig == signal.SIGXFSZ:
        return EvaluationError(ErrorKind.SANDBOX_VIOLATION, "the submission wrote a file larger than the limit of "
                               f"{limits.get('max_file_bytes')} bytes", tail)
    if sig is not None:
        # No guess: the sandbox's limits announce themselves above (a memory limit as a failed
        # allocation, CPU time as SIGXCPU); a bare SIGKILL came from the program or the kernel.
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else "unknown"
        return EvaluationError(ErrorKind.RUNTIME_ERROR, f"the program was killed by signal {sig} ({name})", tail)
    last = _last_error_line(stderr) or f"exit status {result.returncode}"
    return EvaluationError(ErrorKind.RUNTIME_ERROR, f"the program failed: {last}", tail)


# --------------------------------------------------------------------------------------------
# Binds.
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bind:
    source: str
    dest: str
    writable: bool = False
    device: bool = False


def _nested_under(path: str, parents: Iterable[str]) -> bool:
    return any(path != p and path.startswith(p.rstrip("/") + "/") for p in parents)


def interpreter_paths() -> list[str]:
    """Directories the running Python needs: its prefixes (a virtual environment and the base
    installation it points at) and the real location of the executable."""
    paths = set()
    for prefix in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix):
        paths.add(os.path.abspath(prefix))
        paths.add(os.path.realpath(prefix))
    paths.add(os.path.dirname(os.path.realpath(sys.executable)))
    system = ("/usr", "/lib", "/lib64", "/bin", "/sbin")
    kept = sorted(p for p in paths if p not in ("/", *system) and not p.startswith(tuple(s + "/" for s in system)))
    return [p for p in kept if not _nested_under(p, kept)]


def _system_binds() -> tuple[list[Bind], list[str]]:
    """/usr read-only, the merged-/usr symlinks (or real dirs where not merged), ld.so.cache."""
    binds, symlink_args = [Bind("/usr", "/usr")], []
    for name in ("bin", "sbin", "lib", "lib64", "lib32", "libx32"):
        path = f"/{name}"
        if os.path.islink(path):
            symlink_args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            binds.append(Bind(path, path))
    if os.path.exists("/etc/ld.so.cache"):
        binds.append(Bind("/etc/ld.so.cache", "/etc/ld.so.cache"))
    return binds, symlink_args


def _gpu_binds() -> list[Bind]:
    import glob

    devices = sorted({p for g in _GPU_DEVICE_GLOBS for p in glob.glob(f"/dev/{g}")})
    return [Bind(p, p, writable=True, device=True) for p in devices]


def _bind_args(binds: Sequence[Bind], symlinks: Sequence[str], *, staging: bool, tmp_bytes: int,
               shm_bytes: int) -> list[str]:
    """bwrap arguments: own mounts, world-traversable parent dirs, then binds shallowest first."""
    args = list(symlinks)
    args += ["--dev-bind", "/proc", "/proc"] if staging else ["--proc", "/proc"]
    # /tmp and /dev/shm are memory outside the address-space limit: cap both, since many files each
    # under the file-size limit could fill RAM (bwrap's /dev is a tmpfs of half the host's memory).
    args += ["--dev", "/dev", "--perms", "1777", "--size", str(shm_bytes), "--tmpfs", "/dev/shm"]
    args += ["--size", str(tmp_bytes), "--tmpfs", "/tmp"]
    ordered = sorted(binds, key=lambda b: (b.dest.count("/"), b.dest))
    made: set[str] = set()
    bound: list[str] = []
    for bind in ordered:
        parts = bind.dest.strip("/").split("/")[:-1]
        for i in range(len(parts)):
            parent = "/" + "/".join(parts[: i + 1])
            # Skip what exists already: our own mounts, /proc and /dev contents, bound trees.
            if parent in made or parent in _OWN_MOUNTS or _nested_under(parent, ("/proc", "/dev", *bound)):
                continue
            made.add(parent)
            args += ["--perms", "0755", "--dir", parent]
        flag = "--dev-bind" if bind.device else "--bind" if bind.writable else "--ro-bind"
        args += [flag, bind.source, bind.dest]
        bound.append(bind.dest)
    return args


# --------------------------------------------------------------------------------------------
# Availability.
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SandboxStatus:
    available: bool
    detail: str
    staged: bool = False  # root only: the privileged staging layer is in use


def _probe_layout(staged: bool) -> SandboxStatus:
    # Locked, so a runner starting beside this probe leaves it alone, and swept (workdir.PREFIXES)
    # at the next start when a killed process left it, with its scratch mount.
    with workdir.locked_folder("runner-probe-") as probe_folder:
        tmp = str(probe_folder)
        Path(tmp).chmod(0o711)
        scratch = Path(tmp) / "scratch"
        # The probe's scratch volume goes with its folder.
        cleanup = contextlib.ExitStack()
        cleanup.callback(host_limits.unmount_under, tmp)
        # The sandbox uid must be able to read the interpreter and its packages (torch included).
        probe = ("import importlib.util, os, sys\n"
                 "spec = importlib.util.find_spec('torch')\n"
                 "spec and open(spec.origin, 'rb').close()\n"
                 "sys.stdout.write(str(os.getuid()))")
        try:
            result = _run_bwrap([sys.executable, "-I", "-c", probe], scratch=scratch, ro_binds=(),
                                time_limit_s=30, cpu_time_s=30, memory_bytes=None, gpu=False,
                                max_processes=DEFAULT_MAX_PROCESSES, max_open_files=DEFAULT_MAX_OPEN_FILES,
                                max_file_bytes=DEFAULT_MAX_FILE_BYTES, env=None, cancel=None, on_stdout_line=None,
                                staged=staged, max_scratch_bytes=64 << 20)
        except EvaluationError as exc:
            return SandboxStatus(False, exc.message)
        finally:
            cleanup.close()
    if not result.ok:
        return SandboxStatus(False, f"a probe in the sandbox failed: {result.log_tail[-500:]}")
    uid = result.stdout_tail.strip()
    uids = host_limits.sandbox_uids()
    if os.geteuid() == 0 and not (uid.isdigit() and int(uid) in uids):
        return SandboxStatus(False, f"the probe ran as uid {uid}, not one of the sandbox uids "
                             f"{uids.start}-{uids.stop - 1}")
    who = f"uid {uid}" + (" (dropped from root" + (", staged" if staged else ", direct") + ")"
                          if os.geteuid() == 0 else "")
    return SandboxStatus(True, f"bubblewrap sandbox works: {who}, no network, private pid namespace", staged)


@functools.lru_cache(maxsize=1)
def _probe() -> SandboxStatus:
    if bwrap_path() is None:
        return SandboxStatus(False, "bubblewrap (bwrap) is not installed: apt install bubblewrap")
    if os.geteuid() != 0:
        return _probe_layout(staged=False)
    if _tool("setpriv") is None:
        return SandboxStatus(False, "setpriv (util-linux) is needed to drop to the sandbox user")
    staged = _probe_layout(staged=True)
    if staged.available:
        return staged
    direct = _probe_layout(staged=False)
    if direct.available:
        return direct
    return SandboxStatus(False, f"{staged.detail} (and without the staging layer: {direct.detail})")


def sandbox_available(refresh: bool = False) -> SandboxStatus:
    """Whether untrusted code can run here; probed once per process (about 0.1 s)."""
    if refresh:
        _probe.cache_clear()
    return _probe()


# --------------------------------------------------------------------------------------------
# Running.
# --------------------------------------------------------------------------------------------
class _Tail:
    """Reads a pipe to its end, keeping only the last bytes; optionally hands out whole lines."""

    def __init__(self, fd: io.BufferedReader, limit: int, on_line: Callable[[str], None] | None = None) -> None:
        self.buffer = bytearray()
        self.limit = limit
        self.on_line = on_line
        self.partial = bytearray()
        self.thread = threading.Thread(target=self._read, args=(fd,), daemon=True)
        self.thread.start()

    def _read(self, fd: io.BufferedReader) -> None:
        with fd:
            while chunk := fd.read1(65536):
                self.buffer += chunk
                if len(self.buffer) > 2 * self.limit:
                    del self.buffer[: len(self.buffer) - self.limit]
                if self.on_line is not None:
                    self._lines(chunk)

    def _lines(self, chunk: bytes) -> None:
        on_line = self.on_line
        if on_line is None:
            return
        self.partial += chunk
        *lines, rest = self.partial.split(b"\n")
        self.partial = bytearray(rest[-4096:])
        for line in lines:
            try:
                on_line(line[:4096].decode("utf-8", "replace"))
            except Exception:  # a progress callback must never break the run
                pass

    def text(self, wait: float) -> str:
        self.thread.join(wait)
        return bytes(self.buffer[-self.limit:]).decode("utf-8", "replace")


def _children(pid: int) -> list[int]:
    found = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                found += [int(c) for c in fh.read().split()]
    except OSError:
        pass
    return found


def _kill(proc: subprocess.Popen[bytes], *, namespaced: bool) -> None:
    """Kill everything the run started. In the sandbox, killing the pid namespace's init (the
    child of the outermost bwrap) makes the kernel kill every process inside, and bwrap exits only
    once they are all gone, so the sandbox uid's process count is back to zero afterwards."""
    if namespaced:
        for child in _children(proc.pid):
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _rlimit_args(*, cpu_time_s: int, memory_bytes: int | None, max_processes: int, max_open_files: int,
                 max_file_bytes: int) -> list[str]:
    prlimit = _tool("prlimit")
    if prlimit is None:
        raise EvaluationError(ErrorKind.SANDBOX_UNAVAILABLE, "prlimit (util-linux) is needed to set resource limits")
    args = [prlimit, f"--cpu={cpu_time_s}:{cpu_time_s + 5}", f"--nproc={max_processes}",
            f"--nofile={max_open_files}", f"--fsize={max_file_bytes}", "--core=0"]
    if memory_bytes:
        args.append(f"--as={memory_bytes}")
    return [*args, "--"]


def _bwrap_argv(argv: Sequence[str], *, binds: Sequence[Bind], symlinks: Sequence[str], chdir: str,
                env: dict[str, str], marker_fd: int, seccomp_fd: int, tmp_bytes: int, shm_bytes: int,
                staged: bool, user: SandboxUser) -> list[str]:
    bwrap = bwrap_path()
    assert bwrap is not None
    inner = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
             "--cap-drop", "ALL", "--hostname", "sandbox", "--clearenv"]
    for key, value in env.items():
        inner += ["--setenv", key, value]
    # Under the staging layer every bind already sits at its destination, so the inner layer binds
    # each destination onto itself; a (source, dest) pair's source is not in that namespace.
    layered = staged and os.geteuid() == 0
    inner_binds = [replace(b, source=b.dest) for b in binds] if layered else list(binds)
    inner += _bind_args(inner_binds, symlinks, staging=False, tmp_bytes=tmp_bytes, shm_bytes=shm_bytes)
    inner += ["--remount-ro", "/"]  # bwrap's own root is a writable tmpfs: close it
    inner += ["--seccomp", str(seccomp_fd)]  # installed last, on the program only
    # A tiny trampoline marks "the sandbox started" before any submitted code runs, so a failure
    # to start (infrastructure) can never be confused with, or faked by, the program's own exit.
    trampoline = (f"import os, sys; os.write({marker_fd}, {START_MARKER!r}); os.close({marker_fd}); "
                  "os.execvp(sys.argv[1], sys.argv[1:])")
    inner += ["--chdir", chdir, "--", sys.executable, "-I", "-S", "-c", trampoline, *argv]
    if os.geteuid() != 0:
        return inner
    drop = [_tool("setpriv") or "setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups",
            "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--"]
    if not staged:
        return [*drop, *inner]
    staging = [bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--die-with-parent"]
    staging += _bind_args(binds, symlinks, staging=True, tmp_bytes=1 << 20, shm_bytes=1 << 20)
    return [*staging, "--", *drop, *inner]


def _prepare_scratch(scratch: Path, *, user: SandboxUser, max_bytes: int) -> None:
    """Make the scratch folder the job's: under a root runner, a tmpfs of ``max_bytes`` owned by
    the job's uid (raises HostLimitError when it cannot be mounted)."""
    scratch.mkdir(parents=True, exist_ok=True)
    if host_limits.can_mount():
        host_limits.mount_scratch(scratch, size_bytes=max_bytes, max_entries=MAX_SCRATCH_ENTRIES + 1, user=user)
    os.chmod(scratch, 0o700)


def _run_bwrap(argv: Sequence[str], *, user: SandboxUser | None = None, **options: Any) -> SandboxResult:
    """Run in the sandbox as ``user``, or as a uid leased for this run alone (see _run_as)."""
    try:
        with contextlib.nullcontext(user) if user is not None else host_limits.lease_user() as job_user:
            return _run_as(job_user, argv, **options)
    except HostLimitError as exc:
        raise EvaluationError(ErrorKind.SANDBOX_UNAVAILABLE, f"the sandbox's host limits could not be set up: "
                              f"{exc}") from exc


def _run_as(user: SandboxUser, argv: Sequence[str], *, scratch: Path, ro_binds: Iterable[Path | str | ReadOnlyBind],
            time_limit_s: float, cpu_time_s: int, memory_bytes: int | None, gpu: bool, max_processes: int,
            max_open_files: int, max_file_bytes: int, env: dict[str, str] | None, cancel: threading.Event | None,
            on_stdout_line: Callable[[str], None] | None, max_scratch_bytes: int = DEFAULT_MAX_SCRATCH_BYTES,
            max_shm_bytes: int = DEFAULT_MAX_SHM_BYTES, tmp_bytes: int | None = None,
            cgroup_memory_bytes: int | None = None, staged: bool = True) -> SandboxResult:
    """Everything the program may hold in memory is bounded: with a cgroup v2, ``memory.max`` is
    ``cgroup_memory_bytes`` (or ``memory_bytes``) plus the sizes of /tmp, /dev/shm and the scratch
    tmpfs; without one, the address-space limit, those three tmpfs sizes and a seccomp rule against
    memfd_create (where an address-space limit applies) bound it instead."""
    tmp_bytes = tmp_bytes if tmp_bytes is not None else max_file_bytes
    scratch = Path(os.path.abspath(scratch))
    _prepare_scratch(scratch, user=user, max_bytes=max_scratch_bytes)
    system, symlinks = _system_binds()
    binds = [*system, *(Bind(p, p) for p in interpreter_paths())]
    for item in ro_binds:
        source, dest = (item if isinstance(item, tuple) else (item, item))
        binds.append(Bind(os.path.abspath(source), os.path.abspath(dest)))
    bwrap_dir = os.path.dirname(os.path.realpath(bwrap_path() or "/usr/bin/bwrap"))
    if not bwrap_dir.startswith("/usr/"):
        binds.append(Bind(bwrap_dir, bwrap_dir))
    binds.append(Bind(str(scratch), str(scratch), writable=True))
    if gpu:
        binds += _gpu_binds()
    for bind in binds:
        if not os.path.exists(bind.source):
            raise EvaluationError(ErrorKind.RUNNER_ERROR, f"sandbox bind source {bind.source} does not exist")
    limits = dict(time_limit_s=int(time_limit_s), cpu_time_s=cpu_time_s, memory_bytes=memory_bytes,
                  max_processes=max_processes, max_open_files=max_open_files, max_file_bytes=max_file_bytes)
    budget = cgroup_memory_bytes or memory_bytes
    in_memory = tmp_bytes + max_shm_bytes + (max_scratch_bytes if host_limits.can_mount() else 0)
    memory_max = budget + in_memory if budget else None
    group = (host_limits.create_job_cgroup(user, memory_bytes=memory_max, max_processes=max_processes)
             if memory_max is not None else None)
    if group is not None:
        limits["memory_max_bytes"] = memory_max
    try:
        seccomp_fd = filter_fd(deny_memfd=group is None and memory_bytes is not None)
    except FilterUnavailable as exc:
        if group is not None:
            group.remove()
        raise EvaluationError(ErrorKind.SANDBOX_UNAVAILABLE, str(exc)) from exc
    marker_read, marker_write = os.pipe()
    try:
        full_env = {**BASE_ENV, **(env or {})}
        command = _rlimit_args(cpu_time_s=cpu_time_s, memory_bytes=memory_bytes, max_processes=max_processes,
                               max_open_files=max_open_files, max_file_bytes=max_file_bytes)
        command += _bwrap_argv(argv, binds=binds, symlinks=symlinks, chdir=str(scratch), env=full_env,
                               marker_fd=marker_write, seccomp_fd=seccomp_fd, tmp_bytes=tmp_bytes,
                               shm_bytes=max_shm_bytes, staged=staged, user=user)
        if group is not None:
            # The shell moves itself into the job's cgroup, then becomes prlimit: all that follows is in it.
            command = ["/bin/sh", "-c", 'echo 0 > "$0" && exec "$@"', str(group.procs), *command]
    except BaseException:
        for fd in (marker_read, marker_write, seccomp_fd):
            os.close(fd)
        if group is not None:
            group.remove()
        raise
    try:
        result = _supervise(command, pass_fds=(marker_write, seccomp_fd), cwd="/", time_limit_s=time_limit_s,
                            mode=MODE_BWRAP, limits=limits, namespaced=True, cancel=cancel,
                            on_stdout_line=on_stdout_line, guard=_scratch_guard(scratch, max_scratch_bytes))
        os.set_blocking(marker_read, False)
        try:
            started = os.read(marker_read, 1) == START_MARKER
        except BlockingIOError:
            started = False
    finally:
        os.close(marker_read)
        if group is not None:
            oom_kills = group.oom_kills()
            group.remove()
    if group is not None:
        result.oom_kills = oom_kills
    if not started and not result.cancelled:
        raise EvaluationError(ErrorKind.SANDBOX_UNAVAILABLE,
                              f"bubblewrap could not start the sandbox: {result.stderr_tail.strip()[-1000:]}")
    result.readable = tuple(b.dest for b in binds if not b.writable)
    result.writable = tuple(b.dest for b in binds if b.writable)
    return result


def scratch_usage(root: Path | str, max_entries: int = MAX_SCRATCH_ENTRIES) -> tuple[int, int]:
    """Bytes on disk and number of entries under ``root``, never following links; stops
    counting past ``max_entries``."""
    total = count = 0
    stack = [str(root)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    count += 1
                    if count > max_entries:
                        return total, count
                    info = entry.stat(follow_symlinks=False)
                    total += info.st_blocks * 512
                    if stat.S_ISDIR(info.st_mode):
                        stack.append(entry.path)
        except OSError:
            continue
    return total, count


def _scratch_guard(scratch: Path, max_bytes: int) -> Callable[[], str]:
    def check() -> str:
        used, entries = scratch_usage(scratch)
        if used > max_bytes:
            return f"wrote more than {max_bytes} bytes to its scratch folder"
        if entries > MAX_SCRATCH_ENTRIES:
            return f"created more than {MAX_SCRATCH_ENTRIES} files in its scratch folder"
        return ""

    return check


def _supervise(command: list[str], *, pass_fds: tuple[int, ...], cwd: str,
               time_limit_s: float, mode: str, limits: dict[str, int | None], namespaced: bool,
               cancel: threading.Event | None,
               on_stdout_line: Callable[[str], None] | None, guard: Callable[[], str],
               env: dict[str, str] | None = None) -> SandboxResult:
    """Start the command in its own session, tail its output, enforce the wall clock and the
    scratch ``guard`` (checked every second), honour cancellation, and make sure nothing it
    started outlives it. Closes ``pass_fds`` here."""
    start = time.monotonic()
    try:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                pass_fds=pass_fds, cwd=cwd, env=env or {"PATH": BASE_ENV["PATH"]},
                                start_new_session=True)
    finally:
        for fd in pass_fds:
            os.close(fd)
    # Both are pipes with the default buffering: BufferedReaders (typeshed says IO[bytes] | None).
    stdout = _Tail(cast(io.BufferedReader, proc.stdout), TAIL_BYTES, on_stdout_line)
    stderr = _Tail(cast(io.BufferedReader, proc.stderr), TAIL_BYTES)
    deadline = start + time_limit_s
    next_guard = start + 1.0
    timed_out = cancelled = False
    violation = ""
    while True:
        try:
            proc.wait(timeout=0.1)
            break
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if now > deadline:
            timed_out = True
        elif cancel is not None and cancel.is_set():
            cancelled = True
        elif now > next_guard:
            violation, next_guard = guard(), now + 1.0
        if timed_out or cancelled or violation:
            _kill(proc, namespaced=namespaced)
            break
    wall = time.monotonic() - start
    return SandboxResult(returncode=proc.returncode, stdout_tail=stdout.text(5), stderr_tail=stderr.text(5),
                         timed_out=timed_out, cancelled=cancelled, violation=violation, wall_s=wall, mode=mode,
                         limits=limits)


def run_sandboxed(argv: Sequence[str], *, scratch: Path | str, ro_binds: Iterable[Path | str | ReadOnlyBind] = (),
                  time_limit_s: float, memory_bytes: int | None = DEFAULT_MEMORY_BYTES, trust: bool = False,
                  gpu: bool = False, cpu_time_s: int | None = None, max_processes: int = DEFAULT_MAX_PROCESSES,
                  max_open_files: int = DEFAULT_MAX_OPEN_FILES, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
                  max_scratch_bytes: int = DEFAULT_MAX_SCRATCH_BYTES, max_shm_bytes: int = DEFAULT_MAX_SHM_BYTES,
                  tmp_bytes: int | None = None, env: dict[str, str] | None = None,
                  cancel: threading.Event | None = None, on_stdout_line: Callable[[str], None] | None = None,
                  user: SandboxUser | None = None) -> SandboxResult:
    """Run ``argv`` (absolute paths; the same inside and outside) in the sandbox and return what
    happened. ``ro_binds`` are paths (or ``(source, dest)`` pairs) the program may read, besides
    /usr and the running interpreter; ``scratch`` is the one folder it may write, handed to the
    job's uid (``user``, or one leased for this run: see runner/host_limits.py). Under a root runner
    scratch is a tmpfs of ``max_scratch_bytes``; /tmp (``tmp_bytes``, default ``max_file_bytes``)
    and /dev/shm (``max_shm_bytes``) are always sized tmpfs mounts. ``memory_bytes`` is an
    address-space limit on CPU only (CUDA reserves huge virtual ranges) and, where the host has
    cgroup v2, the job's memory.max (plus the tmpfs sizes) on CPU and GPU alike. ``cancel`` stops
    the run from another thread. The caller inspects the
    result or raises ``result.failure()``, the matching EvaluationError, when it is not None.

    Raises EvaluationError(SANDBOX_UNAVAILABLE) when bubblewrap is missing or cannot start, unless
    ``trust`` is set, in which case an unavailable sandbox means a plain subprocess with the same
    rlimits and timeout (``result.mode == MODE_TRUSTED``).
    """
    cpu_time_s = cpu_time_s if cpu_time_s is not None else int(time_limit_s) + 5
    memory = None if gpu else memory_bytes
    status = sandbox_available()
    if status.available:
        return _run_bwrap(argv, user=user, scratch=Path(scratch), ro_binds=ro_binds, time_limit_s=time_limit_s,
                          cpu_time_s=cpu_time_s, memory_bytes=memory, gpu=gpu, max_processes=max_processes,
                          max_open_files=max_open_files, max_file_bytes=max_file_bytes, env=env, cancel=cancel,
                          on_stdout_line=on_stdout_line, max_scratch_bytes=max_scratch_bytes,
                          max_shm_bytes=max_shm_bytes, tmp_bytes=tmp_bytes, cgroup_memory_bytes=memory_bytes,
                          staged=status.staged)
    if not trust:
        raise EvaluationError(ErrorKind.SANDBOX_UNAVAILABLE,
                              f"{status.detail}; this runner refuses to run untrusted code without its sandbox "
                              "(start it with --trust only for your own files)")
    return _run_trusted(argv, scratch=Path(scratch), time_limit_s=time_limit_s, cpu_time_s=cpu_time_s,
                        memory_bytes=memory, max_processes=max_processes, max_open_files=max_open_files,
                        max_file_bytes=max_file_bytes, max_scratch_bytes=max_scratch_bytes, env=env, cancel=cancel,
                        on_stdout_line=on_stdout_line)


def _run_trusted(argv: Sequence[str], *, scratch: Path, time_limit_s: float, cpu_time_s: int,
                 memory_bytes: int | None, max_processes: int, max_open_files: int, max_file_bytes: int,
                 max_scratch_bytes: int, env: dict[str, str] | None, cancel: threading.Event | None,
                 on_stdout_line: Callable[[str], None] | None) -> SandboxResult:
    scratch.mkdir(parents=True, exist_ok=True)
    limits = dict(time_limit_s=int(time_limit_s), cpu_time_s=cpu_time_s, memory_bytes=memory_bytes,
                  max_processes=max_processes, max_open_files=max_open_files, max_file_bytes=max_file_bytes)
    try:
        # A root runner is not limited by RLIMIT_NPROC anyway; a fork bomb is on the trusting user.
        command = _rlimit_args(cpu_time_s=cpu_time_s, memory_bytes=memory_bytes, max_processes=max_processes,
                               max_open_files=max_open_files, max_file_bytes=max_file_bytes)
    except EvaluationError:
        command = []
    result = _supervise([*command, *argv], pass_fds=(), cwd=str(scratch),
                        time_limit_s=time_limit_s, mode=MODE_TRUSTED, limits=limits, namespaced=False,
                        cancel=cancel, on_stdout_line=on_stdout_line, env={**BASE_ENV, **(env or {})},
                        guard=_scratch_guard(scratch, max_scratch_bytes))
    result.writable = ("/",)
    result.readable = ("/",)
    return result


# --------------------------------------------------------------------------------------------
# Reading what the sandbox wrote: never follow a link the submitted code planted.
# --------------------------------------------------------------------------------------------
def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISSOCK, "a socket"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def read_scratch_file(scratch: Path | str, name: str, max_bytes: int = 64 << 20) -> bytes | None:
    """The bytes of a regular file the sandbox left in scratch, or None when it is absent.

    Opened without following a link and without blocking (O_NOFOLLOW | O_NONBLOCK), then checked
    with fstat: a symbolic link, socket, FIFO, folder or device in its place is a
    SANDBOX_VIOLATION (never followed or waited on), a file the submission made unreadable too, and
    one over ``max_bytes`` is WRONG_OUTPUT. Only an error the runner cannot trace to the file's
    state (say, too many open files) propagates as OSError."""
    path = os.path.join(scratch, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        try:
            info = os.lstat(path)
        except OSError:
            raise exc from None
        regular = stat.S_ISREG(info.st_mode)
        if not regular or exc.errno in (errno.EACCES, errno.EPERM):
            what = "a file it made unreadable" if regular else _file_type(info.st_mode)
            raise EvaluationError(ErrorKind.SANDBOX_VIOLATION, f"the submission left {what} in place of {name} in "
                                  "its scratch folder; the runner reads only regular files it may read") from exc
        raise
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise EvaluationError(ErrorKind.SANDBOX_VIOLATION, f"the submission left {_file_type(info.st_mode)} in "
                                  f"place of {name} in its scratch folder; the runner reads only regular files")
        if info.st_size > max_bytes:
            raise EvaluationError(ErrorKind.WRONG_OUTPUT, f"{name} is {info.st_size} bytes, over the limit of "
                                  f"{max_bytes}")
        return fh.read(max_bytes + 1)[:max_bytes]
