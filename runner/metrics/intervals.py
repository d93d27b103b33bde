"""Percentile bootstrap intervals (seeded) of accuracies.

A resample of n right/wrong outcomes has Binomial(n, p̂) successes, so each stratum is resampled
exactly with one binomial draw per replicate; strata are the corruption × severity sets for -C
tasks, the regions for GeoDE, and the region × income-quartile cells for Dollar Street.
Intervals are ``[low, high]`` in the metric's units (percent for accuracies).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 0


def resampled_successes(
    successes: np.ndarray, totals: np.ndarray, *, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """int [n_boot, S]: successes of each stratum in each bootstrap replicate (exact: binomial)."""
    successes = np.asarray(successes, dtype=np.int64)
    totals = np.asarray(totals, dtype=np.int64)
    p = np.divide(successes, totals, out=np.zeros(len(totals)), where=totals > 0)
    return rng.binomial(totals[None, :], p[None, :], size=(n_boot, len(totals)))


def interval(samples: np.ndarray) -> list[float]:
    """Percentile 95% interval of bootstrap replicates (already in the metric's units)."""
    low, high = np.percentile(np.asarray(samples, dtype=np.float64), [2.5, 97.5])
    return [float(low), float(high)]


def factorize(values: Sequence[Any] | np.ndarray) -> tuple[np.ndarray, list[Any]]:
    """(codes, uniques in order of first appearance)."""
    index: dict[Any, int] = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int64, count=len(values))
    return codes, list(index)


def accuracy_ci(
    correct: np.ndarray,
    *,
    strata: Sequence[Any] | np.ndarray | None = None,
    n_boot: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> list[float]:
    """95% interval of the accuracy (%) of ``correct``, resampled within each stratum if given."""
    correct = np.asarray(correct, dtype=bool)
    codes = np.zeros(len(correct), dtype=np.int64) if strata is None else factorize(strata)[0]
    totals = np.bincount(codes, minlength=codes.max(initial=0) + 1)
    wins = np.bincount(codes, weights=correct, minlength=len(totals)).astype(np.int64)
    draws = resampled_successes(wins, totals, n_boot=n_boot, rng=np.random.default_rng(seed))
    return interval(100.0 * draws.sum(axis=1) / max(len(correct), 1))
