"""Datasets under the runner's data root (shared/PROTOCOLS.md, "Data root layout").

``DATASETS`` maps each catalogue dataset id (the folder under the data root) to a
:class:`~runner.datasets.base.Dataset` with ``present``, ``verify``, ``prepare``, ``fake`` and
``open``: the classifier datasets, the denoising sets (``denoise/<set>``,
runner/datasets/denoise.py) and CPython's pydoc text (``pydoc-topics``, runner/datasets/text.py).
``open_task(slug, data_root)`` opens every reader a classifier task needs.

A track evaluates a classifier like this (labels stay in this process; only inputs go to the model)::

    data = open_task("imagenet-a", data_root)
    outputs = {part: [] for part in data.parts}
    for part, reader in data.parts.items():
        for batch in reader.batches(256, workers=8, device=device):
            logits = model(batch.inputs)                       # in the sandbox
            outputs[part].append(classification.compact("imagenet-a", logits, len(batch)))
    doc = results.score("imagenet-a", {p: np.concatenate(v) for p, v in outputs.items()}, data)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.catalogue import CATALOGUE, catalogue_task, tasks_of_track
from runner.datasets.base import (
    FAKE_MARKER,
    Batch,
    Dataset,
    DatasetMissing,
    DownloadFailed,
    Reader,
    Targets,
    VerifyReport,
)
from runner.datasets.cifar import (
    CIFAR10,
    CIFAR10_C,
    CIFAR100,
    CIFAR100_C,
    CifarCorruptedDataset,
    CifarDataset,
)
from runner.datasets.denoise import DENOISE_DATASETS
from runner.datasets.digits import DigitsDataset, digits_split
from runner.datasets.geo import DollarStreetDataset, GeodeDataset
from runner.datasets.imagenet import DATASET_A, DATASET_C, DATASET_R, DATASET_VAL
from runner.datasets.text import PydocTopicsDataset

__all__ = [
    "CLASSIFIER_TASKS",
    "DATASETS",
    "FAKE_MARKER",
    "Batch",
    "Dataset",
    "DatasetMissing",
    "DownloadFailed",
    "Reader",
    "TaskData",
    "Targets",
    "VerifyReport",
    "default_data_root",
    "digits_split",
    "get",
    "is_present",
    "known",
    "open_task",
    "present",
]

DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        CifarDataset(CIFAR10, title="CIFAR-10", aliases=("cifar-10", "cifar10")),
        CifarDataset(CIFAR100, title="CIFAR-100", aliases=("cifar-100", "cifar100")),
        CifarCorruptedDataset(CIFAR10_C, title="CIFAR-10-C", aliases=("cifar-10-c", "cifar10-c", "cifar10c")),
        CifarCorruptedDataset(
            CIFAR100_C, title="CIFAR-100-C", aliases=("cifar-100-c", "cifar100-c", "cifar100c")
        ),
        DATASET_VAL,
        DATASET_A,
        DATASET_R,
        DATASET_C,
        GeodeDataset(),
        DollarStreetDataset(),
        DigitsDataset(),
        PydocTopicsDataset(),
        *DENOISE_DATASETS,
    )
}


def get(name: str) -> Dataset:
    """The dataset called ``name``: its catalogue id (``imagenet/val``) or an alias (``imagenet-val``)."""
    if name in DATASETS:
        return DATASETS[name]
    wanted = name.strip().lower()
    for dataset in DATASETS.values():
        if wanted == dataset.name.lower() or wanted in dataset.aliases:
            return dataset
    raise KeyError(f"no dataset {name!r}; known: {', '.join(DATASETS)}")


def default_data_root() -> Path:
    return Path(os.environ.get("RUNNER_DATA") or Path.home() / ".cache" / "leaderboard-data")


def known() -> list[str]:
    """Every dataset some catalogue task reads, in catalogue order."""
    names: list[str] = []
    for bench in CATALOGUE:
        for task in bench.tasks:
            if task.dataset and task.dataset not in names:
                names.append(task.dataset)
    return names


def is_present(name: str, data_root: Path | str) -> bool:
    """Whether dataset ``name`` (a catalogue id) can be read on this node; False for an unknown one."""
    dataset = DATASETS.get(name)
    return dataset is not None and dataset.present(data_root)


def present(data_root: Path | str) -> list[str]:
    """The datasets this node can serve; the site sees them in claims and node heartbeats."""
    return [name for name in known() if is_present(name, data_root)]


# --------------------------------------------------------------------------------------------
# Classifier tasks → the readers they need.
# --------------------------------------------------------------------------------------------
CLASSIFIER_TASKS = tasks_of_track("classify")  # the catalogue's, in its order


@dataclass
class TaskData:
    """The readers of one classifier task, by part: ``main``, and for ``imagenet-r`` also
    ``imagenet200`` (the val images of ImageNet-R's 200 classes)."""

    slug: str
    parts: dict[str, Reader]

    @property
    def main(self) -> Reader:
        return self.parts["main"]

    @property
    def synthetic(self) -> bool:
        return any(r.env.get("synthetic_data") for r in self.parts.values())

    @property
    def env(self) -> dict[str, Any]:
        """The dataset part of the result's env (read after evaluating: it names the decoder)."""
        env = dict(self.main.env)
        env["synthetic_data"] = self.synthetic
        warnings = list(env.get("dataset_warnings", []))
        for part, reader in self.parts.items():
            if part != "main":
                env[part] = dict(reader.env)
                warnings += [f"{part}: {w}" for w in reader.env.get("dataset_warnings", [])]
        env["dataset_warnings"] = warnings
        return env


def open_task(slug: str, data_root: Path | str, params: dict[str, Any] | None = None) -> TaskData:
    """Open the readers of classifier task ``slug``; raises DatasetMissing when a dataset is absent."""
    if slug not in CLASSIFIER_TASKS:
        raise KeyError(f"{slug!r} is not a classifier task ({', '.join(CLASSIFIER_TASKS)})")
    task = catalogue_task(slug)
    options = {**task.params, **(params or {})}
    dataset = DATASETS[task.dataset]
    if not dataset.present(data_root):
        raise DatasetMissing(
            f"{task.dataset} is not under {data_root}; run `runner data prepare {task.dataset}` "
            f"(or `runner data fake {task.dataset}` for a labelled synthetic copy)"
        )
    parts = {"main": dataset.open(data_root, **options)}
    if slug == "imagenet-r":
        val = DATASETS["imagenet/val"]
        if not val.present(data_root):
            raise DatasetMissing(
                "imagenet-r also scores ImageNet-200 (the val images of its 200 classes), and "
                f"imagenet/val is not under {data_root}"
            )
        parts["imagenet200"] = val.open(data_root, label_space="imagenet_r")
    return TaskData(slug, parts)
