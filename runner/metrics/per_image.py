"""Per-image outcomes of a classifier task (issue 17; shared/PROTOCOLS.md, "Result keys" and "EL2N
and GraNd"): what each image of the task's fixed order got from one model, kept by the trusted
runner (labels never enter the sandbox) and stored by the site beside the result, for paired
tests, difficulty across submissions and the failure explorer. Pure numpy. Writing and reading
the file (the site reads what runners upload) is runner/per_image_file.py, re-exported here.

The file is a ``np.savez_compressed`` archive of 1-D arrays of one length N (the task's images,
every part in the task's order: ``main``, then ``imagenet200`` for imagenet-r):

==============  =========  ===================================================================
``index``       int64      the image's position in its dataset's canonical order: for digits
                           the row of scikit-learn's ``load_digits()``; elsewhere the reader's
                           fixed order (CIFAR: the test batch's row; -C sets: corruption, then
                           severity, then row; image folders: the sorted file order), counted
                           within its part
``label``       int64      the true class in the task's label space (0–199 for ImageNet-A/R,
                           the masked subset's positions); any-of tasks (geode, dollarstreet):
                           the accepted 1k index the model gave the highest probability
``pred``        int64      top-1: argmax over the scored classes, ties to the lower index
``top5_hit``    bool       the label (any-of: any accepted index) is among the 5 highest
``loss``        float64    cross-entropy in nats, −log softmax(z)[label], z the scored logits
``el2n``        float64    ‖softmax(z) − onehot(label)‖₂ (Paul et al. 2021, arXiv 2107.07075,
                           eq. 2; one model, so no mean over runs), in [0, √2]
``corruption``  str        -C tasks: the corruption's name
``severity``    int64      -C tasks: 1–5
``region``      str        geode, dollarstreet: the region as the metadata spells it
``income_group``str        dollarstreet: the income quartile, "q1" (poorest) … "q4"
``part``        str        imagenet-r: "main" (renditions) or "imagenet200" (val images)
==============  =========  ===================================================================

and, for the failure explorer (issue 17 item 4), a bounded sample of thumbnails with its own
length M ≤ 4096 (runner/thumbnails.py chooses it: per region, income group, corruption and true
class up to 16 failures and 4 successes, seeded; runner/per_image_file.py checks it):

==============  =====================  ========================================================
``thumb_row``   int64 [M]              distinct rows of the arrays above (0 ≤ row < N)
``thumb``       uint8 [M, 32, 32, 3]   RGB: the model's input image, box-filtered down (or
                                       nearest-neighbour up, digits' 8×8) to 32×32
==============  =====================  ========================================================

The scored logits z are the model's outputs over the task's classes, float64; for ImageNet-A/R
the 200 subset columns (the masking of the metrics, PROTOCOLS "ImageNet validation, -A, -R").
Strings are numpy unicode arrays, never objects: the site loads the file with
``allow_pickle=False``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from runner.metrics.classification import TOPK, hits, hits_any, padded, task_subset
from runner.per_image_file import (
    GROUP_KEYS,
    MAX_FILE_BYTES,
    MAX_UNPACKED_BYTES,
    REQUIRED,
    PerImageError,
    file_name,
    npz_bytes,
    read_per_image,
    task_group_keys,
    write_per_image,
)

__all__ = [
    "GROUP_KEYS",
    "MAX_FILE_BYTES",
    "MAX_UNPACKED_BYTES",
    "REQUIRED",
    "PartOutcomes",
    "PerImageError",
    "file_name",
    "npz_bytes",
    "outcomes",
    "per_image_arrays",
    "read_per_image",
    "task_group_keys",
    "write_per_image",
]


# --------------------------------------------------------------------------------------------
# Logits → loss, EL2N and the label the loss is taken against.
# --------------------------------------------------------------------------------------------
def outcomes(
    logits: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    accepted: np.ndarray | None = None,
    subset: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(label, loss, el2n)`` of a batch, each [N]: int64, float64 nats, float64.

    ``logits`` [N, C] (any float dtype; computed in float64); ``subset``: the columns scored (the
    200 of ImageNet-A/R), labels then index into it. Give ``labels`` [N] (single-label tasks) or
    ``accepted`` [N, A] (any-of tasks: accepted indices, padded with -1), whose label per image
    is the accepted index of highest probability (ties to the first listed; PROTOCOLS "EL2N and
    GraNd"). loss = −log softmax(z)[y] via log-sum-exp; el2n = ‖softmax(z) − onehot(y)‖₂ taken
    directly (not from Σp² − 2p_y + 1, which cancels when p_y ≈ 1). Raises ValueError for
    shapes that do not match or a label outside the scored classes.
    """
    z = np.asarray(logits)
    if subset is not None:
        z = z[:, np.asarray(subset)]
    if z.ndim != 2:
        raise ValueError(f"logits must be [N, C], got shape {list(z.shape)}")
    n, classes = z.shape
    # Classes first, [C, N], in a new float64 array (the caller's logits stay as they are): every
    # reduction over the classes is then an elementwise operation over rows of N, 1.7x (10 classes)
    # to 2.4x (1,000) faster a batch than reducing each image's short row.
    zt = np.array(z.T, dtype=np.float64, order="C")
    cols = np.arange(n)
    zt -= zt.max(axis=0) if n else 0.0
    if accepted is not None:
        table = np.asarray(accepted, dtype=np.int64)
        if table.ndim != 2 or len(table) != n:
            raise ValueError(f"accepted must be [{n}, A], got shape {list(table.shape)}")
        if table.size and (table.max() >= classes or ((table < 0) & (table != -1)).any()):
            raise ValueError(f"accepted indices must lie in 0–{classes - 1} (or be -1, padding)")
        if ((table < 0).all(axis=1)).any():
            raise ValueError("every image needs at least one accepted index")
        gathered = np.where(table >= 0, zt[np.maximum(table, 0), cols[:, None]], -np.inf)
        label = table[cols, gathered.argmax(axis=1)]
    else:
        if labels is None:
            raise ValueError("give labels or accepted")
        label = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(label) != n:
            raise ValueError(f"{len(label)} labels for {n} rows of logits")
        if n and (label.min() < 0 or label.max() >= classes):
            raise ValueError(f"labels must lie in 0–{classes - 1}")
    # One exp over the batch, in place: p = e^(z − max) / Σ e^(z − max), log p_y = (z_y − max) − log Σ.
    label_shifted = zt[label, cols]
    p = np.exp(zt, out=zt)
    total = p.sum(axis=0)
    loss = np.log(total) - label_shifted
    p /= total
    p[label, cols] -= 1.0
    el2n = np.sqrt(np.einsum("ij,ij->j", p, p))
    return label, loss, el2n


class PartOutcomes:
    """Collects :func:`outcomes` of one reader's items, batch by batch, in reader order. Takes the
    task slug and the reader's Targets (labels, or ``accepted`` for any-of tasks)."""

    def __init__(self, slug: str, targets: Any, size: int):
        self.subset = task_subset(slug)
        self.labels: np.ndarray | None = None
        self.accepted: np.ndarray | None = None
        if targets.labels is not None:
            self.labels = np.asarray(targets.labels, dtype=np.int64)
        else:
            self.accepted = padded(targets.accepted)
        self.label = np.full(size, -1, dtype=np.int64)
        self.loss = np.full(size, np.nan)
        self.el2n = np.full(size, np.nan)

    def add(self, positions: np.ndarray, logits: np.ndarray) -> None:
        """The outcomes of the items at reader ``positions`` [n] from their ``logits`` [n, C]."""
        positions = np.asarray(positions)
        if self.labels is not None:
            label, loss, el2n = outcomes(logits, self.labels[positions], subset=self.subset)
        elif self.accepted is not None:
            label, loss, el2n = outcomes(logits, accepted=self.accepted[positions], subset=self.subset)
        self.label[positions], self.loss[positions], self.el2n[positions] = label, loss, el2n


def _canonical_index(reader: Any) -> np.ndarray:
    """The images' positions in the dataset's canonical order: the reader's integer ids where it
    has them (digits: ``load_digits()`` rows; CIFAR: the test rows), else its own order."""
    ids = getattr(reader, "ids", None)
    if ids is not None and len(ids) == len(reader) and all(isinstance(i, str) and i.isdigit() for i in ids):
        return np.asarray([int(i) for i in ids], dtype=np.int64)
    return np.arange(len(reader), dtype=np.int64)


def per_image_arrays(
    slug: str, data: Any, topk: Mapping[str, np.ndarray], collected: Mapping[str, PartOutcomes]
) -> dict[str, np.ndarray]:
    """The file's arrays (module docstring) for classifier task ``slug``: ``data`` its TaskData,
    ``topk`` per part the checked top-5 [N, 5] in reader order (runner.metrics.classification
    ``compact``), ``collected`` per part its :class:`PartOutcomes`. Raises ValueError when an
    item got no outcome."""
    from runner.metrics.geo import income_quartile

    columns: dict[str, list[np.ndarray]] = {k: [] for k in (*REQUIRED, *task_group_keys(slug))}
    for part, reader in data.parts.items():
        top, got, targets = np.asarray(topk[part]), collected[part], reader.targets
        if (got.label < 0).any() or not np.isfinite(got.loss).all():
            raise ValueError(f"{slug}: {int((got.label < 0).sum())} images of part {part} got no outcome")
        columns["index"].append(_canonical_index(reader))
        columns["label"].append(got.label)
        columns["pred"].append(top[:, 0].astype(np.int64))
        if got.labels is not None:
            columns["top5_hit"].append(hits(top, got.labels, TOPK))
        elif got.accepted is not None:
            columns["top5_hit"].append(hits_any(top, got.accepted, TOPK))
        columns["loss"].append(got.loss)
        columns["el2n"].append(got.el2n)
        if "corruption" in columns:
            columns["corruption"].append(np.asarray(targets.corruption).astype(str))
            columns["severity"].append(np.asarray(targets.severity, dtype=np.int64))
        if "region" in columns:
            columns["region"].append(np.asarray(targets.region).astype(str))
        if "income_group" in columns:
            columns["income_group"].append(income_quartile(targets.income).astype(str))
        if "part" in columns:
            columns["part"].append(np.full(len(reader), part))
    return {key: np.concatenate(values) for key, values in columns.items()}
