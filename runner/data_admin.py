"""What `runner data list | prepare | verify | fake` do, over every dataset a catalogue task reads:
the classifier datasets of runner.datasets and, when runner.denoise is installed, the denoising
sets (``denoise/<set>``). One report shape for both, so the command stays a thin printer."""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner import datasets
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


def _denoise() -> Any | None:
    if importlib.util.find_spec("runner.denoise.datasets") is None:
        return None
    from runner.denoise import datasets as denoise_datasets

    return denoise_datasets


def _denoise_set(name: str) -> str | None:
    """The denoising set ``name`` means (``denoise/bsd68`` or ``bsd68``), if any."""
    module = _denoise()
    if module is None:
        return None
    short = name.removeprefix("denoise/").strip().lower()
    return short if short in module.SETS else None


def resolve(name: str) -> tuple[str, Any]:
    """("classifier", Dataset) or ("denoise", set name); KeyError naming the known datasets."""
    try:
        return "classifier", datasets.get(name)
    except KeyError:
        pass
    short = _denoise_set(name)
    if short is not None:
        return "denoise", short
    raise KeyError(f"no dataset {name!r}; known: {', '.join(datasets.known())}")


def entries(root: Path | str) -> list[DataEntry]:
    """Every dataset some catalogue task reads, in catalogue order."""
    rows = []
    for name in datasets.known():
        try:
            family, item = resolve(name)
        except KeyError:
            rows.append(DataEntry(name, name, datasets.is_present(name, root), False, str(Path(root) / name)))
            continue
        if family == "classifier":
            present = item.present(root)
            path = str(item.path(root)) if item.folder else "bundled with scikit-learn"
            synthetic = bool(present and item.folder and item.synthetic(root))
            rows.append(DataEntry(name, item.title, present, synthetic, path, item.needs_manual_download))
        else:
            module = _denoise()
            info = module.set_info(item)
            bundled = module.is_bundled(item)
            folder = module.set_dir(item, root)
            present = bundled or (folder.is_dir() and any(folder.glob("*.png")))
            synthetic = (not bundled) and (folder / datasets.FAKE_MARKER).exists()
            rows.append(
                DataEntry(
                    name,
                    info.title,
                    present,
                    synthetic,
                    "bundled with scikit-image" if bundled else str(folder),
                )
            )
    return rows


def _from_verify(report: datasets.VerifyReport) -> DataReport:
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


def _from_denoise(report: dict[str, Any]) -> DataReport:
    ok = bool(report.get("present"))
    return DataReport(
        f"denoise/{report['dataset']}",
        ok,
        bool(report.get("synthetic")),
        []
        if ok
        else [f"{report['path']} has no images; run `runner data prepare denoise/{report['dataset']}`"],
        list(report.get("warnings", [])),
        {"files": report.get("files"), "expected": report.get("expected_files")},
        {"sha256": str(report.get("sha256", "")), "status": str(report.get("checksums", ""))},
    )


def verify(name: str, root: Path | str, *, deep: bool = False) -> DataReport:
    family, item = resolve(name)
    if family == "classifier":
        return _from_verify(item.verify(root, deep=deep))
    return _from_denoise(_denoise().verify(item, root))


def prepare(name: str, root: Path | str, progress: Progress | None = None) -> DataReport:
    """Download (where a network and a public release exist) and verify. Raises DownloadFailed or
    DatasetMissing with what to do instead."""
    family, item = resolve(name)
    Path(root).mkdir(parents=True, exist_ok=True)
    if family == "classifier":
        return _from_verify(item.prepare(root, progress))
    module = _denoise()
    try:
        module.prepare(item, root)
    except module.DatasetError as exc:
        raise datasets.DownloadFailed(str(exc)) from exc
    return _from_denoise(module.verify(item, root))


def fake(name: str, root: Path | str, *, n_per_class: int | None = None, seed: int = 0) -> Path:
    """Write the small, labelled synthetic copy; returns its folder."""
    family, item = resolve(name)
    if family == "classifier":
        options = {"seed": seed}
        if n_per_class is not None:
            options["n_per_class"] = n_per_class
        return item.fake(root, **options)
    module = _denoise()
    try:
        return module.fake(item, root, **({"n": n_per_class} if n_per_class else {}))
    except module.DatasetError as exc:
        raise ValueError(str(exc)) from exc


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
    sums = {k: v for k, v in report.checksums.items() if v and k != "status"}
    if not report.ok or not sums:
        return None
    if len(sums) == 1:
        value = next(iter(sums.values()))
    else:
        lines = "\n".join(f"{k}={v}" for k, v in sorted(sums.items()))
        value = "checksums-sha256:" + hashlib.sha256(lines.encode()).hexdigest()
    value = " ".join(value.split())
    return value if value.isascii() and value.isprintable() and len(value) <= 200 else None
