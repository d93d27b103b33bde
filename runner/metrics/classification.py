"""Classifier outputs to predictions, and predictions to hits and accuracies (%).

Predictions are kept small: :func:`compact` turns each batch of logits [N, C] into the top-5
class indices [N, 5] (int32) in the task's label space (for ImageNet-A/R: the argsort of the 200
subset logits, so indices are 0–199); every function that takes predictions also accepts full
logits (:func:`as_topk`). The output width comes from the catalogue (``num_classes``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from runner import data_files
from runner.catalogue import catalogue_task
from runner.metrics.intervals import accuracy_ci
from runner.spec import ErrorKind, EvaluationError

TOPK = 5


# --------------------------------------------------------------------------------------------
# Outputs → predictions.
# --------------------------------------------------------------------------------------------
def task_classes(slug: str) -> int:
    """Width of the model's output for a classifier task (the catalogue's ``num_classes``).
    Raises UnknownTask (a LookupError) for a task the catalogue lacks."""
    classes = catalogue_task(slug).num_classes
    if classes is None:
        raise ValueError(f"{slug} is not a task with classes")
    return classes


def task_subset(slug: str) -> tuple[int, ...] | None:
    """The 1k logit columns kept before ranking (ImageNet-A/R), else None."""
    if slug == "imagenet-a":
        return data_files.subset_indices("imagenet_a")
    if slug == "imagenet-r":
        return data_files.subset_indices("imagenet_r")
    return None


def topk_indices(logits: np.ndarray, k: int = TOPK, subset: Sequence[int] | None = None) -> np.ndarray:
    """int32 [N, min(k, C)]: classes by descending logit, ties to the lower index. With
    ``subset`` only those columns are ranked and indices are positions within the subset."""
    scores = np.asarray(logits)
    if subset is not None:
        scores = scores[:, np.asarray(subset)]
    order = np.argsort(-scores, axis=1, kind="stable")[:, : min(k, scores.shape[1])]
    return order.astype(np.int32)


def compact(slug: str, outputs: Any, n_items: int | None = None, *, k: int = TOPK) -> np.ndarray:
    """Check a batch of model outputs and reduce it to top-k indices in the task's label space.

    Raises EvaluationError WRONG_OUTPUT for a shape other than [n_items, classes] and NOT_FINITE
    for NaN or infinity (the model's fault, reported to its author).
    """
    if hasattr(outputs, "detach"):  # a torch tensor, possibly on the GPU
        outputs = outputs.detach().float().cpu().numpy()
    logits = np.asarray(outputs)
    classes = task_classes(slug)
    if logits.ndim != 2 or logits.shape[1] != classes or (n_items is not None and logits.shape[0] != n_items):
        expected = f"[{n_items if n_items is not None else 'N'}, {classes}]"
        raise EvaluationError(
            ErrorKind.WRONG_OUTPUT,
            f"the model returned shape {list(logits.shape)}; {slug} needs logits of shape {expected}",
        )
    if not np.issubdtype(logits.dtype, np.floating):
        raise EvaluationError(
            ErrorKind.WRONG_OUTPUT, f"the model returned {logits.dtype}; logits must be floats"
        )
    if not np.isfinite(logits).all():
        bad = int((~np.isfinite(logits)).any(axis=1).sum())
        raise EvaluationError(
            ErrorKind.NOT_FINITE, f"the model returned NaN or infinite logits for {bad} images"
        )
    return topk_indices(logits, k, task_subset(slug))


def as_topk(predictions: Any, *, subset: Sequence[int] | None = None, k: int = TOPK) -> np.ndarray:
    """Top-k indices from either logits (floats, ranked here) or top-k indices (integers, as is)."""
    array = np.asarray(predictions)
    if array.ndim == 1:
        array = array[:, None]
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64)
    return topk_indices(array, k, subset).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Hits and accuracies.
# --------------------------------------------------------------------------------------------
def hits(topk: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """bool [N]: the label is among the first k predictions."""
    return (np.asarray(topk)[:, :k] == np.asarray(labels)[:, None]).any(axis=1)


def padded(accepted: Sequence[Sequence[int]]) -> np.ndarray:
    """Accepted index lists → an int matrix padded with -1 (never a class)."""
    width = max((len(a) for a in accepted), default=1)
    out = np.full((len(accepted), max(width, 1)), -1, dtype=np.int64)
    for i, choices in enumerate(accepted):
        out[i, : len(choices)] = choices
    return out


def hits_any(topk: np.ndarray, accepted: Sequence[Sequence[int]] | np.ndarray, k: int) -> np.ndarray:
    """bool [N]: any of the first k predictions is one of the item's accepted indices."""
    table = accepted if isinstance(accepted, np.ndarray) and accepted.ndim == 2 else padded(accepted)
    return (np.asarray(topk)[:, :k, None] == table[:, None, :]).any(axis=(1, 2))


def percent(correct: np.ndarray) -> float:
    correct = np.asarray(correct)
    return float(100.0 * correct.mean()) if correct.size else float("nan")


def summary(topk: np.ndarray, labels: np.ndarray, *, n_boot: int, seed: int) -> tuple[dict, dict]:
    """top1/top5 and their intervals for single-label predictions."""
    top1, top5 = hits(topk, labels, 1), hits(topk, labels, TOPK)
    metrics = {"top1": percent(top1), "top5": percent(top5)}
    ci = {
        "top1": accuracy_ci(top1, n_boot=n_boot, seed=seed),
        "top5": accuracy_ci(top5, n_boot=n_boot, seed=seed + 1),
    }
    return metrics, ci
