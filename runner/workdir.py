"""The runner's private folders (``runner-job-*``, ``runner-artifact-*``, ``runner-model-*``):
made and locked for as long as their process uses them, removed whatever the sandbox left in them,
and swept when a runner starts if a dead run abandoned them.

A sandboxed program owns its scratch folder and can leave anything there: a tree thousands of
folders deep (deeper than PATH_MAX, deeper than Python's recursion limit), sockets, FIFOs,
symbolic links, folders without write or search permission. :func:`remove_tree` removes all of
it iteratively, relative to open folder descriptors (no path is ever longer than one name), never
following a link, and never raises.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from runner import host_limits

log = logging.getLogger(__name__)

PREFIXES = ("runner-job-", "runner-artifact-", "runner-model-", "runner-probe-")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_dir(name: str, parent_fd: int) -> int:
    """Open folder ``name`` under ``parent_fd``, giving its owner read, write and search
    permission first when it lacks them (a folder the submission made read-only or 0000)."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except PermissionError:
        os.chmod(name, 0o700, dir_fd=parent_fd)  # it is a folder (scandir said so), not a link
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    info = os.fstat(fd)
    if info.st_mode & 0o700 != 0o700:
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o700)
    return fd


def remove_tree(path: Path | str) -> int:
    """Remove ``path`` and everything under it; returns how many entries could not be removed (0
    when it is gone, or was never there). Never raises, never recurses, never follows a link.

    Depth first, one open folder at a time, each folder listed once: unlink its entries that are
    not folders and note its subfolders; descend into the next noted subfolder; when none is left,
    climb to the parent through ``..`` (checked against the device and inode it was entered from)
    and remove the folder. An entry that cannot be removed is logged and skipped, so the walk
    always ends; a folder holding one is then left too.
    """
    path = os.path.abspath(path)
    host_limits.unmount_under(path)  # a scratch volume mounted under it (runner/host_limits.py)
    parent, name = os.path.split(path)
    try:
        top_parent = os.open(parent or "/", _DIR_FLAGS)
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc)
        return 1
    left = 0
    fd = -1
    # One frame per open level, top first: (its name in its parent, the parent's (device, inode),
    # the subfolders still to remove).
    frames: list[tuple[str, tuple[int, int], list[str]]] = []
    try:
        try:
            info = os.stat(name, dir_fd=top_parent, follow_symlinks=False)
        except FileNotFoundError:
            return 0
        if not stat.S_ISDIR(info.st_mode):
            os.unlink(name, dir_fd=top_parent)
            return 0
        fd = _open_dir(name, top_parent)
        top = os.fstat(top_parent)
        pending, failed = _clear_files(fd)
        left += failed
        frames.append((name, (top.st_dev, top.st_ino), pending))
        while frames:
            pending = frames[-1][2]
            if pending:
                child = pending.pop()
                try:
                    child_fd = _open_dir(child, fd)
                except OSError as exc:
                    log.warning("could not open %s under %s: %s", child, path, exc)
                    left += 1
                    continue
                here = os.fstat(fd)
                os.close(fd)
                fd = child_fd
                pending, failed = _clear_files(fd)
                left += failed
                frames.append((child, (here.st_dev, here.st_ino), pending))
                continue
            done, parent_id, _ = frames.pop()
            up = top_parent if not frames else os.open("..", _DIR_FLAGS, dir_fd=fd)
            above = os.fstat(up)
            os.close(fd)
            fd = up if up != top_parent else -1
            if (above.st_dev, above.st_ino) != parent_id:
                raise OSError(f"a folder under {path} moved while it was being removed")
            try:
                os.rmdir(done, dir_fd=up)
            except OSError as exc:
                log.warning("could not remove a folder %d levels under %s: %s", len(frames), path, exc)
                left += 1
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)
        left += 1
    finally:
        if fd >= 0:
            os.close(fd)
        os.close(top_parent)
    return left


def _clear_files(fd: int) -> tuple[list[str], int]:
    """Unlink every entry of folder ``fd`` that is not a folder (files, links, sockets, FIFOs);
    returns the names of its subfolders and how many entries would not go."""
    folders, failed = [], 0
    with os.scandir(fd) as entries:
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.name)
                    continue
                os.unlink(entry.name, dir_fd=fd)
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("could not remove %s: %s", entry.name, exc)
                failed += 1
    return folders, failed


# --------------------------------------------------------------------------------------------
# Locked private folders.
# --------------------------------------------------------------------------------------------
class LockedFolder:
    """A new folder ``<base>/<prefix>XXXX`` (mode 0700) holding an exclusive flock on itself for
    as long as it is open: a runner starting beside this process knows it is in use. ``close``
    removes it (everything in it, whatever it is) and releases the lock."""

    def __init__(self, prefix: str, base: str | Path | None = None):
        self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
        self._fd: int | None = os.open(self.path, _DIR_FLAGS)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def close(self) -> None:
        if self._fd is None:
            return
        try:
            remove_tree(self.path)
        finally:
            os.close(self._fd)  # releases the lock
            self._fd = None


@contextlib.contextmanager
def locked_folder(prefix: str, base: str | Path | None = None) -> Iterator[Path]:
    """A :class:`LockedFolder` for the block; removed afterwards whatever it holds."""
    folder = LockedFolder(prefix, base)
    try:
        yield folder.path
    finally:
        folder.close()


def work_base() -> str | None:
    """Where job folders go: RUNNER_WORK_DIR, else the system's temporary folder."""
    return os.environ.get("RUNNER_WORK_DIR") or None


def sweep_abandoned(started_at: float | None = None, bases: list[str | Path] | None = None) -> list[Path]:
    """Remove the runner folders (:data:`PREFIXES`) in ``bases`` (RUNNER_WORK_DIR and the system's
    temporary folder) last changed before ``started_at`` (default: now) whose lock no live process
    holds: a runner that was killed, or whose cleanup failed, left them. Returns what it removed."""
    started_at = time.time() if started_at is None else started_at
    if bases is None:
        bases = list(dict.fromkeys(p for p in (work_base(), tempfile.gettempdir()) if p))
    removed = []
    for base in bases:
        try:
            entries = list(os.scandir(base))
        except OSError:
            continue
        for entry in entries:
            if not entry.name.startswith(PREFIXES) or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                if entry.stat(follow_symlinks=False).st_mtime >= started_at:
                    continue
                fd = os.open(entry.path, _DIR_FLAGS)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live run holds it
                left = remove_tree(entry.path)
            finally:
                os.close(fd)
            if not left:
                removed.append(Path(entry.path))
    if removed:
        log.info("removed %d abandoned job folders: %s", len(removed), ", ".join(p.name for p in removed))
    return removed


# --------------------------------------------------------------------------------------------
# The sandbox's input folder: what a sandboxed program reads through a read-only bind.
# --------------------------------------------------------------------------------------------
StagedFile = Path | bytes | Callable[[Path], object]


def stage_input_folder(parent: Path, files: Mapping[str, StagedFile], *, name: str = "input") -> Path:
    """Make ``parent/name`` a folder the sandbox's unprivileged user can read but not list above:
    ``parent`` becomes 0711 (traversable, not listable), the folder 0755, every staged file 0644.

    ``files`` maps a file name in the folder to what it holds: a ``Path`` is copied, ``bytes`` are
    written, a callable is called with the destination path and writes the file itself (for large
    arrays: ``lambda p: np.save(p, images)``, the name ending in ``.npy``). Returns the folder.
    Raises FileExistsError when the folder is already there, OSError when a copy or write fails.
    The three users: the model server (runner/serve/server.py), the optimizer server
    (runner/opt_server.py) and the training track (runner/tracks/training/launch.py).
    """
    parent.chmod(0o711)
    folder = parent / name
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)  # whatever the umask
    for file_name, content in files.items():
        target = folder / file_name
        if isinstance(content, Path):
            shutil.copyfile(content, target)
        elif isinstance(content, bytes):
            target.write_bytes(content)
        else:
            content(target)
        target.chmod(0o644)
    return folder
