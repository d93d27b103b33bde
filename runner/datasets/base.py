"""What every dataset of the runner shares: its errors, the marker that labels a synthetic copy,
the verify report, and the reader that hands out input batches while it keeps the labels.

A reader yields :class:`Batch` objects that carry inputs, positions and ids only. The labels and
metadata (:class:`Targets`) stay with the trusted parent process, which scores the outputs; they
are never sent into the sandbox. A denoising set has no labels: its clean images are its targets
and stay in the parent the same way (runner/datasets/denoise.py says how it fits).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runner.progress import Progress
from runner.spec import ErrorKind, EvaluationError

FAKE_MARKER = "FAKE_DATASET.txt"
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


class DatasetMissing(EvaluationError):
    """The dataset is absent or unreadable on this node (an infrastructure error: retried elsewhere)."""

    def __init__(self, message: str):
        super().__init__(ErrorKind.DATASET_MISSING, message)


class DownloadFailed(EvaluationError):
    """``prepare`` could not fetch or check a release archive."""

    def __init__(self, message: str):
        super().__init__(ErrorKind.DOWNLOAD_FAILED, message)


# --------------------------------------------------------------------------------------------
# The synthetic marker: every fake copy carries it, and every reader reports it.
# --------------------------------------------------------------------------------------------
def write_marker(folder: Path, dataset: str, *, seed: int, details: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / FAKE_MARKER
    stamp = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    marker.write_text(
        f"SYNTHETIC DATA: a small fake copy of {dataset} in its released format, written by the "
        f"runner at {stamp} (seed {seed}).\n{details}\n"
        "It is not the released dataset. Every result computed on it carries env.synthetic_data = "
        "true and is labelled synthetic wherever it appears.\n",
        encoding="utf-8",
    )
    return marker


def is_synthetic(folder: Path) -> bool:
    return (folder / FAKE_MARKER).is_file()


# --------------------------------------------------------------------------------------------
# Checksums.
# --------------------------------------------------------------------------------------------
def file_digest(path: Path, algorithm: str = "md5") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def listing_fingerprint(entries: list[tuple[str, int]]) -> str:
    """sha256 over sorted (relative path, size) pairs: cheap, and it changes when files do."""
    digest = hashlib.sha256()
    for name, size in sorted(entries):
        digest.update(f"{name}\0{size}\n".encode())
    return "listing-sha256:" + digest.hexdigest()


def sized_listing(root: Path, relpaths: list[str]) -> list[tuple[str, int]]:
    return [(rel, os.stat(root / rel).st_size) for rel in relpaths]


# --------------------------------------------------------------------------------------------
# Verify reports.
# --------------------------------------------------------------------------------------------
@dataclass
class VerifyReport:
    """What ``verify`` found. ``ok`` is False only when the dataset is missing or unreadable; a
    count or checksum that differs from the release is a warning."""

    name: str
    ok: bool = True
    synthetic: bool = False
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    expected: dict[str, int] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # facts the result's env should carry

    def error(self, message: str) -> None:
        self.ok = False
        self.errors.append(message)

    def count(self, key: str, found: int, expected: int | None) -> None:
        self.counts[key] = int(found)
        if expected is not None:
            self.expected[key] = int(expected)
            if found != expected:
                self.warnings.append(f"{key}: {found:,} found, the release has {expected:,}")

    def checksum(self, key: str, found: str, expected: str | None) -> None:
        self.checksums[key] = found
        if expected is not None and found != expected:
            self.warnings.append(f"{key}: checksum {found} differs from the release's {expected}")

    def raise_if_missing(self) -> None:
        if not self.ok:
            raise DatasetMissing(f"{self.name}: " + "; ".join(self.errors))

    def to_env(self) -> dict[str, Any]:
        return {
            "synthetic_data": self.synthetic,
            "dataset_warnings": list(self.warnings),
            "dataset_counts": dict(self.counts),
            **self.info,
        }


# --------------------------------------------------------------------------------------------
# Batches, targets and readers.
# --------------------------------------------------------------------------------------------
@dataclass
class Batch:
    """Model inputs for one step: float32 NCHW in [0, 1] (numpy, or a torch tensor on the device
    that was asked for), the items' positions in the reader's order, their ids, and the set they
    belong to (for -C data: corruption and severity). Never labels."""

    inputs: Any
    index: np.ndarray
    ids: list[str]
    group: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.index)


@dataclass
class Targets:
    """Labels and metadata of a reader's items, in the reader's order. Parent side only.

    ``labels``: class index in the task's label space (1k index, or position in the 200-class
    subset for ImageNet-A/R). ``accepted``: for geographic sets, the accepted 1k indices per item.
    The rest are per-item groupings the metrics break results down by.
    """

    labels: np.ndarray | None = None
    accepted: list[np.ndarray] | None = None
    corruption: np.ndarray | None = None
    severity: np.ndarray | None = None
    region: np.ndarray | None = None
    income: np.ndarray | None = None
    objects: list[tuple[str, ...]] | None = None


class Reader:
    """Iterates over a dataset's evaluation items in a fixed order."""

    name: str
    size: int
    targets: Targets
    env: dict[str, Any]

    def __len__(self) -> int:
        return self.size

    def batches(self, batch_size: int = 256, *, workers: int = 0, device: str = "cpu") -> Iterator[Batch]:
        raise NotImplementedError


class Dataset:
    """One dataset under the data root: ``name`` is the catalogue's dataset id and its folder."""

    name: str = ""
    title: str = ""
    aliases: tuple[str, ...] = ()
    folder: str = ""
    # Where a licence or login stands between the runner and the files, ``prepare`` says so.
    needs_manual_download: bool = False
    # The package that ships the data, for a dataset with no folder under the data root.
    bundled_with: str = ""

    def path(self, root: Path | str) -> Path:
        return Path(root) / self.folder

    def present(self, root: Path | str) -> bool:
        raise NotImplementedError

    def verify(self, root: Path | str, *, deep: bool = False) -> VerifyReport:
        raise NotImplementedError

    def prepare(self, root: Path | str, progress: Progress | None = None) -> VerifyReport:
        raise NotImplementedError

    def fake(self, root: Path | str, *, n_per_class: int = 2, seed: int = 0, **options: Any) -> Path:
        raise NotImplementedError

    def open(self, root: Path | str, **params: Any) -> Reader:
        raise NotImplementedError

    def synthetic(self, root: Path | str) -> bool:
        return is_synthetic(self.path(root))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def base_env(name: str, folder: Path, report: VerifyReport, **extra: Any) -> dict[str, Any]:
    """The dataset part of a result's env, as every reader reports it."""
    env = {"dataset": name, **report.to_env(), **extra}
    if report.synthetic:
        env["dataset_note"] = f"synthetic copy ({FAKE_MARKER} in {folder.name})"
    return env
