"""scikit-learn's bundled digits (1,797 real handwritten 8×8 images, 10 classes) with a fixed,
seeded, stratified test split: real data that is always present, for demos and CPU-only nodes."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from runner.datasets.base import Dataset, DatasetMissing, Targets, VerifyReport
from runner.datasets.readers import ArrayReader
from runner.progress import Progress

DIGITS_IMAGES = 1_797


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images [1797, 8, 8] with values 0–16, int64 labels [1797])."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DatasetMissing(
            "scikit-learn is not installed; `pip install scikit-learn` provides the digits"
        ) from exc
    bunch = load_digits()
    return bunch.images.astype(np.uint8), bunch.target.astype(np.int64)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train positions, test positions): in each class, a seeded permutation; the first
    round(test_fraction × class size) go to test. numpy's PCG64 keeps it stable across versions."""
    rng = np.random.default_rng(seed)
    test: list[np.ndarray] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[rng.permutation(len(members))]
        test.append(members[: int(round(test_fraction * len(members)))])
    test_index = np.sort(np.concatenate(test))
    train_index = np.setdiff1d(np.arange(len(labels)), test_index)
    return train_index, test_index


def digits_split(
    test_fraction: float = 0.25, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels); images uint8 [N, 8, 8] in 0–16."""
    images, labels = load_digits_arrays()
    train, test = stratified_split(labels, test_fraction, seed)
    return images[train], labels[train], images[test], labels[test]


class DigitsDataset(Dataset):
    name = "sklearn-digits"
    folder = ""
    title = "scikit-learn digits"
    aliases = ("digits", "sklearn_digits")
    bundled_with = "scikit-learn"

    def present(self, root: Path | str | None = None) -> bool:
        return importlib.util.find_spec("sklearn") is not None

    def verify(self, root: Path | str | None = None, *, deep: bool = False) -> VerifyReport:
        report = VerifyReport(self.name)
        try:
            images, labels = load_digits_arrays()
        except DatasetMissing as exc:
            report.error(exc.message)
            return report
        report.count("images", len(images), DIGITS_IMAGES)
        report.checksums["images+labels"] = "sha256:" + _digest(images, labels)
        return report

    def prepare(self, root: Path | str | None = None, progress: Progress | None = None) -> VerifyReport:
        return self.verify(root)  # ships inside scikit-learn: nothing to download

    def fake(self, root: Path | str | None = None, *, n_per_class: int = 2, seed: int = 0, **_: Any) -> Path:
        raise ValueError(
            "sklearn-digits is real data bundled with scikit-learn: there is no fake copy to write"
        )

    def synthetic(self, root: Path | str | None = None) -> bool:
        return False

    def open(
        self,
        root: Path | str | None = None,
        *,
        split: str = "test",
        test_fraction: float = 0.25,
        split_seed: int = 0,
        **_: Any,
    ) -> ArrayReader:
        images, labels = load_digits_arrays()
        train, test = stratified_split(labels, test_fraction, split_seed)
        chosen = test if split == "test" else train
        report = VerifyReport(self.name)
        report.count("images", len(images), DIGITS_IMAGES)
        env = {
            "dataset": self.name,
            **report.to_env(),
            "split": split,
            "test_fraction": test_fraction,
            "split_seed": split_seed,
            "split_method": "stratified, numpy default_rng(seed) per class",
            "preprocessing": "8×8 grayscale, values/16",
            "dataset_checksum": "sha256:" + _digest(images, labels),
        }
        return ArrayReader(
            self.name,
            images[chosen][..., None],
            Targets(labels=labels[chosen]),
            env,
            ids=[str(i) for i in chosen],
            divisor=16.0,
        )


def _digest(images: np.ndarray, labels: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(images).tobytes())
    digest.update(np.ascontiguousarray(labels).tobytes())
    return digest.hexdigest()
