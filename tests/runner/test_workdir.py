"""The runner's job folders: whatever a sandboxed program leaves in them is removed, and folders a
dead runner abandoned are swept when a runner starts, while live ones are left alone."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from runner.workdir import locked_folder, remove_tree, sweep_abandoned

DEPTH = 3000


def build_hostile_tree(top: Path) -> None:
    """``top``/d/d/... DEPTH levels (a path far past PATH_MAX) with a file at the bottom, and on
    the way a socket, a FIFO, links (one to a file outside), a read-only folder and a 0000 one."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for level in range(DEPTH):
        os.mkdir("d", dir_fd=fd)
        below = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = below
        if level in (1, DEPTH // 2):
            os.symlink(str(top.parent.parent / "outside.txt"), "link", dir_fd=fd)
            os.symlink("..", "loop", dir_fd=fd)
            os.mkfifo("fifo", dir_fd=fd)
            os.mkdir("sealed", dir_fd=fd)
            os.chmod(f"/proc/self/fd/{fd}/sealed", 0)
    with open(f"/proc/self/fd/{fd}/bottom.bin", "wb") as fh:
        fh.write(b"x" * 4096)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(f"/proc/self/fd/{fd}/server.sock")
    sock.close()
    os.fchmod(fd, 0o500)  # the deepest folder read-only
    os.close(fd)
    os.mkdir(top / "readonly")
    (top / "readonly" / "file").write_text("x")
    os.chmod(top / "readonly", 0o500)


def as_unprivileged(work, folder: Path) -> int:
    """Run ``work(folder)`` as an unprivileged user (uid 65534 when the tests run as root, where
    permissions would not apply) and return what it returned (0..255)."""
    if os.geteuid() != 0:
        return work(folder)
    for path in (folder, *folder.iterdir()):
        os.chown(path, 65534, 65534)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child process
        code = 255
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            code = work(folder)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _build_and_remove(folder: Path) -> int:
    build_hostile_tree(folder / "scratch")
    return min(remove_tree(folder / "scratch"), 200) + (100 if (folder / "scratch").exists() else 0)


def test_a_tree_3000_folders_deep_with_sockets_fifos_links_and_sealed_folders_is_removed_by_its_owner():
    # Under /tmp rather than pytest's 0700 folders, so that the unprivileged user can reach it.
    base = Path(tempfile.mkdtemp(prefix="test-workdir-"))
    try:
        base.chmod(0o711)
        folder = base / "job"
        (folder / "scratch").mkdir(parents=True)
        outside = base / "outside.txt"
        outside.write_text("keep me")
        assert as_unprivileged(_build_and_remove, folder) == 0
        assert not (folder / "scratch").exists()
        assert outside.read_text() == "keep me"  # links are removed, never followed
    finally:
        remove_tree(base)


def test_removing_a_missing_folder_or_a_plain_file_does_not_fail(tmp_path):
    assert remove_tree(tmp_path / "absent") == 0
    (tmp_path / "file").write_text("x")
    assert remove_tree(tmp_path / "file") == 0 and not (tmp_path / "file").exists()


def test_a_locked_folder_is_removed_after_its_block_even_when_the_block_raised(tmp_path):
    try:
        with locked_folder("runner-job-7-", tmp_path) as work:
            (work / "scratch" / "a").mkdir(parents=True)
            raise RuntimeError("the track failed")
    except RuntimeError:
        pass
    assert list(tmp_path.iterdir()) == []


HOLD_LOCK = """
import sys, time
from runner.workdir import LockedFolder
folder = LockedFolder("runner-job-1-", sys.argv[1])
(folder.path / "scratch").mkdir()
print(folder.path, flush=True)
time.sleep(60)
"""


def test_a_starting_runner_sweeps_abandoned_job_folders_and_leaves_live_and_new_ones(tmp_path):
    abandoned = [tmp_path / "runner-job-3-abc", tmp_path / "runner-artifact-3-def", tmp_path / "runner-model-x",
                 tmp_path / "runner-probe-y"]  # a sandbox probe killed mid-way (it left its scratch mount too)
    for path in abandoned:
        (path / "scratch" / "deep").mkdir(parents=True)
    other = tmp_path / "someone-elses"
    other.mkdir()
    live = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        live_path = Path(live.stdout.readline().strip())
        old = time.time() - 3600
        for path in (*abandoned, live_path):
            os.utime(path, (old, old))
        newer = tmp_path / "runner-job-9-new"  # made after this runner started: another runner's
        newer.mkdir()
        started = time.time() - 60
        os.utime(newer, (time.time(), time.time()))

        removed = sweep_abandoned(started, [tmp_path])

        assert sorted(removed) == sorted(abandoned)
        assert live_path.is_dir() and (live_path / "scratch").is_dir() and newer.is_dir() and other.is_dir()
    finally:
        live.kill()
        live.wait()
    sweep_abandoned(time.time() + 1, [tmp_path])  # its process is gone: so is its lock
    assert not live_path.exists()
