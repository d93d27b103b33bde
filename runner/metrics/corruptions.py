"""Corruption benchmarks (CIFAR-10-C, CIFAR-100-C, ImageNet-C): mean top-1 over the 15
corruptions × 5 severities, corruption error, and for ImageNet-C the AlexNet-normalized mCE
(and relative mCE given the clean top-1). The 4 extra corruptions are reported apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from runner import data_files
from runner.metrics.classification import as_topk, hits
from runner.metrics.intervals import factorize, interval, resampled_successes
from runner.spec import ErrorKind, EvaluationError

ALEXNET_CLEAN_ERROR = float(data_files.load("imagenet_c")["alexnet_clean_err"])  # 0.4348


def corruption_sets(
    correct: np.ndarray, corruptions: np.ndarray, severities: np.ndarray
) -> dict[tuple[str, int], tuple[int, int]]:
    """{(corruption, severity): (right, total)} in order of appearance."""
    correct = np.asarray(correct, dtype=bool)
    names_code, names = factorize(corruptions)
    combined = names_code * 16 + np.asarray(severities, dtype=np.int64)  # severities are 1–5
    keys, first, codes = np.unique(combined, return_index=True, return_inverse=True)
    totals = np.bincount(codes, minlength=len(keys))
    wins = np.bincount(codes, weights=correct, minlength=len(keys)).astype(np.int64)
    return {
        (str(names[keys[i] // 16]), int(keys[i] % 16)): (int(wins[i]), int(totals[i]))
        for i in np.argsort(first)
    }


def per_corruption(
    sets: dict[tuple[str, int], tuple[int, int]], names: Sequence[str]
) -> dict[str, dict[str, float]]:
    """breakdown ``per_corruption[name][severity]`` = top-1 (%), for the corruptions in ``names``."""
    table: dict[str, dict[str, float]] = {}
    for (name, severity), (right, total) in sets.items():
        if name in names and total:
            table.setdefault(name, {})[str(severity)] = 100.0 * right / total
    return {name: dict(sorted(table[name].items())) for name in names if name in table}


def alexnet_errors() -> dict[str, np.ndarray]:
    return {
        c: np.asarray(v, dtype=np.float64) for c, v in data_files.load("imagenet_c")["alexnet_err"].items()
    }


def corruption_error(errors: np.ndarray, alexnet: np.ndarray) -> np.ndarray:
    """CE_c = Σ_s E(s, c) / Σ_s E_AlexNet(s, c); ``errors`` [..., 5] fractions; returns %."""
    return 100.0 * np.asarray(errors).sum(axis=-1) / alexnet.sum()


def relative_corruption_error(
    errors: np.ndarray, clean_error: float, alexnet: np.ndarray, alexnet_clean: float = ALEXNET_CLEAN_ERROR
) -> np.ndarray:
    """Relative CE_c = Σ_s (E(s, c) − E_clean) / Σ_s (E_AlexNet(s, c) − E_AlexNet_clean); returns %."""
    return 100.0 * (np.asarray(errors) - clean_error).sum(axis=-1) / (alexnet - alexnet_clean).sum()


def corruption_metrics(
    slug: str,
    predictions: Any,
    labels: np.ndarray,
    corruptions: np.ndarray,
    severities: np.ndarray,
    *,
    clean_top1: float | None,
    n_boot: int,
    seed: int,
) -> tuple[dict, dict, dict, dict]:
    """Metrics, intervals, breakdown and env notes of a -C task (the AlexNet terms for imagenet-c)."""
    standard = tuple(data_files.load("imagenet_c")["corruptions"])
    extras = tuple(data_files.load("imagenet_c")["extra_corruptions"])
    topk = as_topk(predictions, k=1)
    sets = corruption_sets(hits(topk, labels, 1), corruptions, severities)
    scored = [key for key in sets if key[0] in standard and sets[key][1]]
    if not scored:
        raise EvaluationError(ErrorKind.DATASET_MISSING, f"{slug}: no image of the 15 corruptions was scored")
    right = np.array([sets[k][0] for k in scored])
    total = np.array([sets[k][1] for k in scored])
    accuracy = right / total
    draws = resampled_successes(right, total, n_boot=n_boot, rng=np.random.default_rng(seed)) / total
    top1 = 100.0 * accuracy.mean()
    top1_draws = 100.0 * draws.mean(axis=1)
    metrics = {"top1": float(top1), "corruption_error": float(100.0 - top1)}
    ci = {"top1": interval(top1_draws), "corruption_error": interval(100.0 - top1_draws)}
    breakdown: dict[str, Any] = {"per_corruption": per_corruption(sets, standard)}
    extra_table = per_corruption(sets, extras)
    if extra_table:
        breakdown["extra_corruptions"] = extra_table
    notes: dict[str, Any] = {
        "top1": f"mean top-1 over {len(scored)} of the 75 corruption × severity sets (15 corruptions; "
        "the 4 extras are reported apart and never enter top1, corruption_error or mce)",
    }
    if slug == "imagenet-c":
        alexnet = alexnet_errors()
        complete = [c for c in standard if all((c, s) in sets and sets[(c, s)][1] for s in range(1, 6))]
        if not complete:
            raise EvaluationError(ErrorKind.DATASET_MISSING, "imagenet-c: no corruption has all 5 severities")
        columns = np.array([[scored.index((c, s)) for s in range(1, 6)] for c in complete])
        errors, error_draws = 1.0 - accuracy[columns], 1.0 - draws[:, columns]  # [C, 5], [B, C, 5]
        ce = np.array([corruption_error(errors[i], alexnet[c]) for i, c in enumerate(complete)])
        ce_draws = np.stack(
            [corruption_error(error_draws[:, i], alexnet[c]) for i, c in enumerate(complete)], axis=1
        )
        metrics["mce"] = float(ce.mean())
        ci["mce"] = interval(ce_draws.mean(axis=1))
        breakdown["ce"] = {c: float(v) for c, v in zip(complete, ce, strict=True)}
        notes["mce"] = (
            f"AlexNet-normalized mean CE over {len(complete)} of 15 corruptions "
            f"(Σ_s E / Σ_s E_AlexNet, AlexNet errors from hendrycks/robustness)"
        )
        if clean_top1 is not None:
            clean = 1.0 - clean_top1 / 100.0
            rel = np.array(
                [relative_corruption_error(errors[i], clean, alexnet[c]) for i, c in enumerate(complete)]
            )
            rel_draws = np.stack(
                [
                    relative_corruption_error(error_draws[:, i], clean, alexnet[c])
                    for i, c in enumerate(complete)
                ],
                axis=1,
            )
            metrics["relative_mce"] = float(rel.mean())
            ci["relative_mce"] = interval(rel_draws.mean(axis=1))
            breakdown["relative_ce"] = {c: float(v) for c, v in zip(complete, rel, strict=True)}
            notes["relative_mce"] = (
                f"clean error {clean:.4f} from the submission's imagenet-val top1, held "
                f"fixed; AlexNet clean error {ALEXNET_CLEAN_ERROR}"
            )
    return metrics, ci, breakdown, notes
