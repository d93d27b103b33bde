"""The training tasks' settings, budgets and data, parent side.

Which tasks train a model comes from the catalogue (runner/catalogue.py: the ``train`` track, with
each task's dataset, class count and input shape); what the catalogue does not say about training
(the model, the augmentation, the sandbox's memory on the CPU, the corruption set the final weights
are also scored on) is :data:`TRAINING_SETTINGS`, by slug. :class:`Budget` is the fixed budget a
job's params name; :class:`Splits` both splits as this process reads them; :func:`harness_config`
the settings the training harness (runner/sandboxed/training.py) takes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runner.catalogue import UnknownTask, catalogue_task
from runner.datasets import DATASETS, DatasetMissing
from runner.sandboxed import training as training_program
from runner.spec import ErrorKind, EvaluationError

GiB = 1 << 30
DEFAULT_BATCH_BOUNDS = (8, 1024)  # examples a next_batch_size optimizer may ask for, unless a task says otherwise


@dataclass(frozen=True)
class TrainingTask:
    slug: str
    model: str
    dataset: str
    num_classes: int
    augment: str
    memory_bytes: int  # address space of the sandbox on the CPU
    corruptions: str = ""  # the -C dataset the final weights are also scored on
    channels: int = 3  # of one input image
    batch_bounds: tuple[int, int] = DEFAULT_BATCH_BOUNDS  # (min, max) batch a next_batch_size optimizer may ask for


@dataclass(frozen=True)
class TrainingSettings:
    """What a training task needs beyond the catalogue's entry."""

    model: str
    augment: str
    memory_bytes: int
    corruptions: str = ""
    # The batch sizes (examples) a next_batch_size optimizer may ask for: from 8 (BatchNorm and
    # the per-step overhead want a few examples) to 1,024 on digits (over two thirds of its 1,347
    # training images) and 4,096 on CIFAR (8 % of the 50,000; the large-batch regime AdAdaGrad grows into).
    batch_bounds: tuple[int, int] = DEFAULT_BATCH_BOUNDS


TRAINING_SETTINGS = {
    "opt-digits": TrainingSettings("digits-cnn", "none", 8 * GiB, batch_bounds=(8, 1024)),
    "opt-cifar10-resnet18": TrainingSettings("cifar-resnet18", "crop-flip", 16 * GiB, corruptions="CIFAR-10-C",
                                             batch_bounds=(8, 4096)),
    "opt-cifar100-resnet18": TrainingSettings("cifar-resnet18", "crop-flip", 16 * GiB, batch_bounds=(8, 4096)),
}


def training_task(slug: str) -> TrainingTask:
    """The training task ``slug``: the catalogue's dataset, class count and channels with
    :data:`TRAINING_SETTINGS`. Raises EvaluationError RUNNER_ERROR when the catalogue has no such
    task, it is not on the ``train`` track, or it has no settings here."""
    try:
        entry = catalogue_task(slug)
        settings = TRAINING_SETTINGS[slug] if entry.track == "train" else None
    except (UnknownTask, KeyError):
        settings = None
    if settings is None:
        raise EvaluationError(ErrorKind.RUNNER_ERROR, f"{slug!r} is not an optimizer training task")
    channels = entry.input_shape[0] if entry.input_shape else 3
    return TrainingTask(slug, settings.model, entry.dataset, int(entry.num_classes or 0), settings.augment,
                        settings.memory_bytes, settings.corruptions, channels, settings.batch_bounds)


@dataclass
class Budget:
    """The task's fixed budget, from the job's params (the catalogue's, or a test's overrides)."""

    epochs: int
    batch_size: int
    seeds: list[int]
    target_top1: float
    precision: str = "auto"
    test_fraction: float = 0.25  # opt-digits: the same split as the digits classifier task
    split_seed: int = 0

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Budget:
        """The budget in a job's ``params`` (``epochs``, ``batch_size``, ``seeds``: a count or a
        list, ``target_top1`` in %, ``precision``, ``test_fraction``, ``split_seed``). Raises
        EvaluationError RUNNER_ERROR when one is missing, malformed or empty."""
        try:
            seeds = params.get("seeds", 1)
            budget = cls(
                epochs=int(params["epochs"]), batch_size=int(params["batch_size"]),
                seeds=list(range(int(seeds))) if not isinstance(seeds, list) else [int(s) for s in seeds],
                target_top1=float(params.get("target_top1", 100.0)),
                precision=str(params.get("precision", "auto")),
                test_fraction=float(params.get("test_fraction", 0.25)), split_seed=int(params.get("split_seed", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise EvaluationError(ErrorKind.RUNNER_ERROR, f"the task's params do not name a budget: {exc}") from exc
        if budget.epochs < 1 or budget.batch_size < 1 or not budget.seeds:
            raise EvaluationError(ErrorKind.RUNNER_ERROR, f"the task's budget is empty: {params}")
        if budget.precision not in ("auto", "bf16", "float32"):
            raise EvaluationError(ErrorKind.RUNNER_ERROR, f"unknown precision {budget.precision!r}")
        return budget


@dataclass
class Splits:
    """Both splits as uint8 NHWC arrays (digits: values 0–16, CIFAR: 0–255), parent side only."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    divisor: float
    env: dict[str, Any]

    def standardization(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std (population) of the training split after / divisor."""
        x = self.train_images.astype(np.float64) / self.divisor
        return [float(v) for v in x.mean(axis=(0, 1, 2))], [float(v) for v in x.std(axis=(0, 1, 2))]


def load_splits(task: TrainingTask, data_root: Path, budget: Budget) -> Splits:
    """Both splits of ``task``'s dataset under ``data_root`` (opt-digits: the budget's fixed split
    of the 1,797 digits), with the datasets' env merged. Raises DatasetMissing when the dataset is
    not there."""
    dataset = DATASETS[task.dataset]
    if not dataset.present(data_root):
        raise DatasetMissing(f"{task.dataset} is not under {data_root}; run `runner data prepare {task.dataset}` "
                             f"(or `runner data fake {task.dataset}` for a labelled synthetic copy)")
    options = {"test_fraction": budget.test_fraction, "split_seed": budget.split_seed} if task.slug == "opt-digits" else {}
    train = dataset.open(data_root, split="train", **options)
    test = dataset.open(data_root, split="test", **options)
    env = {**test.env, "train_split": train.env, "test_split": test.env.get("split", "test")}
    env["synthetic_data"] = bool(train.env.get("synthetic_data") or test.env.get("synthetic_data"))
    env["dataset_warnings"] = [*train.env.get("dataset_warnings", []), *test.env.get("dataset_warnings", [])]
    env.pop("split", None)
    return Splits(train.images, np.asarray(train.targets.labels, dtype=np.int64), test.images,
                  np.asarray(test.targets.labels, dtype=np.int64), float(getattr(train, "divisor", 255.0)), env)


def harness_config(task: TrainingTask, budget: Budget, splits: Splits, *, epochs: int | None = None) -> dict[str, Any]:
    """The training harness's settings (runner/sandboxed/training.py ``TaskConfig``) as a JSON-able
    dict: model, classes, epochs, batch size, seeds, the training split's standardization, the
    augmentation and its 4-pixel padding, precision, one thread."""
    mean, std = splits.standardization()
    return {"model": task.model, "num_classes": task.num_classes, "epochs": epochs or budget.epochs,
            "batch_size": budget.batch_size, "seeds": budget.seeds, "mean": mean, "std": std,
            "divisor": splits.divisor, "augment": task.augment, "pad": 4, "precision": budget.precision,
            "threads": 1}


def task_model(task: TrainingTask) -> Any:
    """The task's model with seed 0's weights, on the CPU (for names, shapes and sizes)."""
    return training_program.build_model(task.model, task.num_classes, task.channels, 0)
