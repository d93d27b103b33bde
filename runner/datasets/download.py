"""Fetching release archives: streamed download with resume, checksum while streaming, and safe
extraction. Only ``prepare`` uses this module; readers never touch the network."""

from __future__ import annotations

import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from runner.datasets.base import DownloadFailed, file_digest
from runner.progress import Progress, no_progress

CHUNK = 1 << 20
USER_AGENT = "leaderboard-runner/1 (dataset prepare)"
RETRY_DELAY_S = 2.0


@dataclass(frozen=True)
class Archive:
    """One release file: where it lives, what it is called, and its published checksum."""

    url: str
    filename: str
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None

    @property
    def algorithm(self) -> str:
        return "sha256" if self.sha256 else "md5"

    @property
    def expected(self) -> str | None:
        return self.sha256 or self.md5


def _urlopen(request: urllib.request.Request, timeout: float):
    # One seam, so tests can serve an archive from memory instead of the network.
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (https release URLs)


def downloads_folder(root: Path | str) -> Path:
    """Where archives are downloaded to under a data root."""
    return Path(root) / ".downloads"


def fetch(
    archive: Archive,
    folder: Path,
    *,
    progress: Progress = no_progress,
    timeout: float = 60.0,
    retries: int = 3,
) -> Path:
    """Download ``archive`` into ``folder`` and check its checksum; return the file's path.

    Steps: reuse a complete earlier download whose checksum matches; otherwise stream into
    ``<file>.part`` in 1 MiB chunks (resuming a partial file with a Range request when the server
    allows), retrying passing failures; hash the finished file, and on a mismatch delete it and
    raise DownloadFailed; else rename it into place.
    """
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / archive.filename
    if target.exists() and (
        archive.expected is None or file_digest(target, archive.algorithm) == archive.expected
    ):
        progress(1.0, f"{archive.filename}: already downloaded")
        return target
    partial = folder / (archive.filename + ".part")
    last_error: Exception | None = None
    for attempt in range(1, retries + 1):
        try:
            _stream(archive, partial, progress=progress, timeout=timeout)
            last_error = None
            break
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and partial.exists():  # the partial file is already whole: check it
                last_error = None
                break
            if exc.code in (401, 403, 404, 410):
                raise DownloadFailed(f"{archive.url} answered HTTP {exc.code}: {exc.reason}") from exc
            last_error = exc
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            last_error = exc
        if attempt < retries:
            time.sleep(RETRY_DELAY_S * attempt)
    if last_error is not None:
        kept = (
            f"; the partial file {partial} is kept and the next prepare resumes it"
            if partial.exists()
            else ""
        )
        raise DownloadFailed(
            f"could not download {archive.url} ({retries} tries): {last_error}{kept}"
        ) from last_error
    found = file_digest(partial, archive.algorithm)
    if archive.expected is not None and found != archive.expected:
        partial.unlink(missing_ok=True)
        raise DownloadFailed(
            f"{archive.filename}: {archive.algorithm} {found} differs from the published "
            f"{archive.expected}; the download was deleted"
        )
    os.replace(partial, target)
    return target


def _stream(archive: Archive, partial: Path, *, progress: Progress, timeout: float) -> None:
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(archive.url, headers=headers)
    with _urlopen(request, timeout) as response:
        status = getattr(response, "status", 200)
        if have and status != 206:  # the server ignored the Range header: start again
            have = 0
        length = response.headers.get("Content-Length") if getattr(response, "headers", None) else None
        total = have + int(length) if length else archive.size
        mode = "ab" if have else "wb"
        done = have
        with open(partial, mode) as out:
            while True:
                block = response.read(CHUNK)
                if not block:
                    break
                out.write(block)
                done += len(block)
                if total:
                    progress(
                        min(done / total, 1.0),
                        f"{archive.filename}: {done / 1e6:,.0f} of {total / 1e6:,.0f} MB",
                    )
    if total and done < total:
        raise ConnectionError(f"connection closed after {done:,} of {total:,} bytes")


# --------------------------------------------------------------------------------------------
# Extraction: never outside the destination.
# --------------------------------------------------------------------------------------------
def extract(archive_path: Path, destination: Path, *, progress: Progress = no_progress) -> list[str]:
    """Unpack a tar (any compression) or zip archive into ``destination``; return its top-level names."""
    destination.mkdir(parents=True, exist_ok=True)
    progress(0.0, f"extracting {archive_path.name}")
    if zipfile.is_zipfile(archive_path):
        with zipfile.ZipFile(archive_path) as zf:
            names = zf.namelist()
            root = destination.resolve()
            for name in names:
                if not (root / name).resolve().is_relative_to(root):
                    raise DownloadFailed(
                        f"{archive_path.name}: member {name!r} would land outside {destination}"
                    )
            zf.extractall(destination)
    else:
        with tarfile.open(archive_path) as tf:
            names = tf.getnames()
            try:
                tf.extractall(destination, filter="data")
            except tarfile.FilterError as exc:  # a member that would escape the folder, or a device file
                raise DownloadFailed(f"{archive_path.name}: refused to extract: {exc}") from exc
    progress(1.0, f"extracted {archive_path.name}")
    return sorted({n.split("/", 1)[0] for n in names if n and not n.startswith("__MACOSX")})


def move_children_up(folder: Path, child: str) -> None:
    """``folder/child/*`` → ``folder/*`` (for archives that wrap their content in one more folder)."""
    inner = folder / child
    for item in inner.iterdir():
        target = folder / item.name
        if target.exists():
            raise DownloadFailed(f"cannot move {item} to {target}: it exists")
        shutil.move(str(item), str(target))
    inner.rmdir()


def fetch_and_extract(archive: Archive, root: Path | str, *, progress: Progress = no_progress) -> None:
    """Download ``archive`` into the data root's downloads folder (checked) and unpack it into the root."""
    path = fetch(archive, downloads_folder(root), progress=progress)
    extract(path, Path(root), progress=progress)
