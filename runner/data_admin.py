"""What `runner data list | prepare | verify | fake` do, over every dataset a catalogue task reads
(the registry of runner.datasets: classifier datasets and denoising sets, ``denoise/<set>``, on one
protocol). One report shape, so the command stays a thin printer."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner import datasets
from runner.datasets import Dataset
from runner.progress import Progress


@dataclass
class DataEntry:
    name: str
    title: str
    present: bool
    synthetic: bool
    path: str
    manual: bool = False  # a licence or login stands between the runner and the files


@dataclass
class DataReport:
    name: str
    ok: bool
    synthetic: bool = False
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def resolve(name: str) -> Dataset:
    """The dataset ``name`` means (a catalogue id such as ``imagenet/val`` or ``denoise/bsd68``, or
    an alias such as ``cifar10`` or ``bsd68``); KeyError naming the known datasets."""
    try:
        return datasets.get(name)
    except KeyError:
        raise KeyError(f"no dataset {name!r}; known: {', '.join(datasets.known())}") from None


def entries(root: Path | str) -> list[DataEntry]:
    """Every dataset some catalogue task reads, in catalogue order."""
    rows = []
    for name in datasets.known():
        try:
            item = resolve(name)
        except KeyError:
            rows.append(DataEntry(name, name, False, False, str(Path(root) / name)))
            continue
        present = item.present(root)
        path = str(item.path(root)) if item.folder else f"bundled with {item.bundled_with}"
        synthetic = bool(present and item.folder and item.synthetic(root))
        rows.append(DataEntry(name, item.title, present, synthetic, path, item.needs_manual_download))
    return rows


def _report(report: datasets.VerifyReport) -> DataReport:
    return DataReport(
        report.name,
        report.ok,
        report.synthetic,
        list(report.errors),
        list(report.warnings),
        dict(report.counts),
        dict(report.checksums),
        list(report.notes),
    )


def verify(name: str, root: Path | str, *, deep: bool = False) -> DataReport:
    return _report(resolve(name).verify(root, deep=deep))


def prepare(name: str, root: Path | str, progress: Progress | None = None) -> DataReport:
    """Download (where a network and a public release exist) and verify. Raises DownloadFailed or
    DatasetMissing with what to do instead."""
    item = resolve(name)
    Path(root).mkdir(parents=True, exist_ok=True)
    return _report(item.prepare(root, progress))


def fake(name: str, root: Path | str, *, n_per_class: int | None = None, seed: int = 0) -> Path:
    """Write the small, labelled synthetic copy; returns its folder. Raises ValueError for a
    dataset that has none (real data bundled with a package)."""
    options: dict[str, Any] = {"seed": seed}
    if n_per_class is not None:
        options["n_per_class"] = n_per_class
    return resolve(name).fake(root, **options)


# --------------------------------------------------------------------------------------------
# What a node reports holding (runner/spec.py, node heartbeats and claims).
# --------------------------------------------------------------------------------------------
def held(root: Path | str) -> list[DataEntry]:
    """The datasets this node can serve now, bundled ones included (the site checks a claim's
    names against the task's dataset)."""
    return [entry for entry in entries(root) if entry.present]


def fingerprint(name: str, root: Path | str) -> str | None:
    """One checksum string for a present dataset, from its (shallow) verify report: the single
    checksum it records, or ``checksums-sha256:`` over all of them; None when verify records
    none (ImageNet-C lists no checksum short of hashing every file) or finds the data unusable."""
    report = verify(name, root)
    sums = {k: v for k, v in report.checksums.items() if v}
    if not report.ok or not sums:
        return None
    if len(sums) == 1:
        value = next(iter(sums.values()))
    else:
        lines = "\n".join(f"{k}={v}" for k, v in sorted(sums.items()))
        value = "checksums-sha256:" + hashlib.sha256(lines.encode()).hexdigest()
    value = " ".join(value.split())
    return value if value.isascii() and value.isprintable() and len(value) <= 200 else None
