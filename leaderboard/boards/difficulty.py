"""Image difficulty across a task's field of classifiers (issue 17 items 3 and 4; shared/PROTOCOLS.md
"EL2N and GraNd", platform adaptation), the data-diet view, and a submission's failures.

Difficulty of test image i over the K public submissions with per-image outcomes on the task:
``difficulty(i) = (1/K) Σ_s el2n_s(i)``, el2n_s(i) = ‖softmax(z_s(x_i)) − onehot(y_i)‖₂ as the
runner wrote it (runner/metrics/per_image.py; Paul, Ganguli, Dziugaite, NeurIPS 2021, arXiv
2107.07075, eq. 2, with the mean taken over submitted models instead of training runs), shown with
the fraction of the K models whose top-1 is wrong. With K ≥ :data:`MIN_MODELS` each image also gets
a 95% percentile bootstrap interval over models (:data:`RESAMPLES` resamples of the K models, seed
0); with fewer the ranking is marked provisional. It ranks test images by how hard they are for
this field; it is no pruning score, and an overconfident model weighs more than a calibrated one.

Images are matched across files by their keys in the order paired.align uses (paired.IMAGE_KEYS;
only the primary part of a file with parts), and a file holding other images than the best row's
is left out with a note. Data diet: dropping the easiest X% of images (lowest difficulty, ties
kept in key order), each submission's top-1 on the images kept, ranked; X = 0 is top-1 on every
image, the board's order on a task ranked by top-1.

Cost: three queries (the board's version, its public rows, their jobs) and, on a cache miss, two
more for the jobs' compact outcome vectors (submissions/per_image.py; a file is read only when
its vectors are not built yet, once per file); the summary is cached (Django's default cache) under the task, the board's
version (boards/cache.py) and the files' names, so a new result or upload recomputes it.
"""
from __future__ import annotations

import hashlib
import logging
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.core.cache import cache as default_cache

from leaderboard.benchmarks.models import Task
from leaderboard.submissions import per_image
from leaderboard.submissions.models import EvaluationJob, OutcomeVectors

from . import cache as page_cache
from . import paired
from .models import BoardEntry

log = logging.getLogger(__name__)

MIN_MODELS = 5  # PROTOCOLS: difficulty is a field's statistic only for K ≥ 5 models
RESAMPLES = 10_000  # as the paired bootstrap (PROTOCOLS); the K models are few, the cost is the [R, K] draw
SEED = 0
DIET_PERCENTS = tuple(range(0, 100, 10))
HARDEST = 48  # images listed on the hardest-images page
GROUP_KEYS = ("region", "income_group", "corruption", "label")
SHOWN_KEYS = ("region", "income_group", "corruption", "severity")  # the hardest table's columns besides class
CACHE_SECONDS = 24 * 3600
SUMMARY_FORMAT = 4  # part of the cache key: bump when summarize() changes what it returns
# Class names where the task's classes have public names (scikit-learn digits; CIFAR-10's
# batches.meta); other tasks show the class index.
CLASS_NAMES = {
    "digits": [str(d) for d in range(10)],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}
CLASS_NAMES["cifar10-c"] = CLASS_NAMES["cifar10"]


def class_name(slug: str, label: int) -> str:
    """The class's name on task ``slug`` (``"3"`` for digits, ``"cat"`` for CIFAR-10), else ``#label``."""
    names = CLASS_NAMES.get(slug)
    return names[label] if names is not None and 0 <= label < len(names) else f"#{label}"


@dataclass
class Field:
    """The public submissions' outcomes on one task, aligned: ``members`` (submission id, name,
    board value) in board order, ``keys`` (per image: index, label and group keys), ``difficulty``
    (float64 [N], the mean EL2N), ``el2n`` (float32 [K, N], for the intervals: half the memory on
    ImageNet-C's 4.75 M images) and
    ``right`` [K, N], and ``notes`` on rows left out."""

    members: list[tuple[int, str, float]]
    keys: dict[str, np.ndarray]
    difficulty: np.ndarray
    el2n: np.ndarray
    right: np.ndarray
    notes: list[str] = field(default_factory=list)
    synthetic: list[int] = field(default_factory=list)  # members scored on a fake (synthetic) dataset
    thumbs: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # image → (submission, job, position)


def _entries(task: Task) -> list[BoardEntry]:
    return list(BoardEntry.objects.filter(task=task, is_public=True)
                .order_by("-value" if task.higher_is_better else "value", "pk"))


def _jobs(task: Task, entries: list[BoardEntry]) -> dict[int, EvaluationJob]:
    return {job.submission_id: job for job in EvaluationJob.objects.filter(
        task=task, state=EvaluationJob.State.SUCCEEDED, submission_id__in=[e.submission_id for e in entries],
    ).exclude(per_image="").exclude(per_image__isnull=True).select_related("task")}


def load_field(task: Task, entries: list[BoardEntry], jobs: dict[int, EvaluationJob]) -> Field | None:
    """Align the outcomes of ``entries`` (a board's public rows, best first) from their jobs'
    compact vectors (per_image.outcome_vectors: hits, EL2N and thumbnail positions of every
    member, the image keys and labels of the first alone; a file is read only when its vectors
    are not built yet); None when none has per-image outcomes. A file that does not read or
    holds other images than the first member's is left out (a note)."""
    members, el2n, right, notes = [], [], [], []
    thumbs: dict[int, tuple[int, int, int]] = {}
    synthetic: list[int] = []
    total: np.ndarray | None = None
    reference: OutcomeVectors | None = None
    found, problems = per_image.outcome_vectors(jobs.values(), fields=("hits", "el2n", "thumbs"))
    for entry in entries:
        job = jobs.get(entry.submission_id)
        if job is None:
            continue
        if job.pk in problems:
            notes.append(f"{entry.submission_name}: left out ({problems[job.pk]})")
            continue
        vectors = found.get(job.pk)
        if vectors is None:
            continue
        try:
            if reference is not None:
                per_image.same_images(vectors, reference)  # raises ValueError naming the difference
        except ValueError as exc:
            notes.append(f"{entry.submission_name}: left out ({exc})")
            continue
        reference = vectors if reference is None else reference
        for t, i in enumerate(per_image.thumb_positions(vectors).tolist()):
            if i >= 0 and i not in thumbs:
                thumbs[i] = (entry.submission_id, job.pk, t)
        members.append((entry.submission_id, entry.submission_name, entry.value))
        if entry.is_synthetic_data:
            synthetic.append(entry.submission_id)
        values = per_image.el2n(vectors)
        total = values.astype(np.float64) if total is None else total + values
        el2n.append(values)
        right.append(per_image.right(vectors))
    if reference is None or total is None:
        return None
    columns = per_image.columns(reference)
    keys = {k: v for k, v in columns.items() if k in (*paired.IMAGE_KEYS, "label", "income_group")}
    return Field(members, keys, total / len(members), np.vstack(el2n), np.vstack(right), notes, synthetic, thumbs)


def bootstrap_mean(el2n: np.ndarray, *, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """[N, 2] 95% percentile intervals of the mean over models of ``el2n`` [K, N], resampling the
    K models with replacement (the same draws for every image)."""
    k = el2n.shape[0]
    draws = np.random.default_rng(seed).integers(0, k, size=(resamples, k))
    weights = np.zeros((resamples, k))
    np.add.at(weights, (np.repeat(np.arange(resamples), k), draws.ravel()), 1.0 / k)
    means = weights @ el2n  # [R, N]
    return np.percentile(means, [2.5, 97.5], axis=0).T


def diet_ranking(right: np.ndarray, difficulty: np.ndarray, percents: tuple[int, ...] = DIET_PERCENTS
                 ) -> list[dict[str, Any]]:
    """Per X in ``percents``: ``kept`` images (the N − ⌊X·N/100⌋ hardest, by ``difficulty`` [N],
    ties in the given order), ``top1`` per model (percent correct on them, from ``right`` [K, N])
    and ``rank`` per model (1 best; equal accuracies share the best rank)."""
    n = right.shape[1]
    order = np.argsort(difficulty, kind="stable")  # easiest first
    out = []
    for x in percents:
        kept = order[(x * n) // 100:]
        top1 = 100.0 * right[:, kept].mean(axis=1) if kept.size else np.zeros(right.shape[0])
        ranks = [1 + int(np.sum(top1 > t)) for t in top1]
        out.append({"percent": x, "kept": int(kept.size), "top1": top1.tolist(), "rank": ranks})
    return out


def _group_stats(values: np.ndarray, difficulty: np.ndarray, wrong: np.ndarray) -> list[dict[str, Any]]:
    out = []
    for value in np.unique(values):
        here = values == value
        d = difficulty[here]
        q1, median, q3 = np.percentile(d, [25, 50, 75])
        out.append({"value": value.item(), "n": int(here.sum()), "mean": float(d.mean()), "q1": float(q1),
                    "median": float(median), "q3": float(q3), "min": float(d.min()), "max": float(d.max()),
                    "wrong": float(wrong[here].mean())})
    return out


def summarize(task: Task, fld: Field, *, hardest: int = HARDEST) -> dict[str, Any]:
    """What the pages show (plain data, cacheable): ``k`` models, ``provisional`` (k < MIN_MODELS),
    ``members``, ``synthetic`` (ids of members scored on synthetic data), ``notes``, ``hardest`` (rows: rank, image keys, class names, difficulty, its
    interval when not provisional, fraction of models wrong), ``groups`` {key: per-value stats},
    ``diet`` (diet_ranking), and for the failure explorer ``difficulty`` and ``wrong`` (float32
    [N], in the images' key order) with ``keys_digest`` (:func:`keys_digest` of that order)."""
    k = fld.el2n.shape[0]
    difficulty = fld.difficulty
    wrong = 1.0 - fld.right.mean(axis=0)
    order = np.argsort(-difficulty, kind="stable")[:hardest]
    intervals = bootstrap_mean(fld.el2n[:, order].astype(np.float64)) if k >= MIN_MODELS else None
    image_keys = [key for key in paired.IMAGE_KEYS if key in fld.keys]
    rows = []
    for rank, i in enumerate(order.tolist()):
        label = int(fld.keys["label"][i])
        rows.append({
            "rank": rank + 1,
            "keys": {key: fld.keys[key][i].item() for key in image_keys},
            "groups": {key: fld.keys[key][i].item() for key in SHOWN_KEYS if key in fld.keys},
            "label": label, "label_name": class_name(task.slug, label),
            "difficulty": float(difficulty[i]), "wrong": float(wrong[i]),
            "ci": intervals[rank].tolist() if intervals is not None else None,
            "thumb": fld.thumbs.get(i),
        })
    groups = {key: _group_stats(fld.keys[key], difficulty, wrong) for key in GROUP_KEYS if key in fld.keys}
    for stat in groups.get("label", []):
        stat["name"] = class_name(task.slug, int(stat["value"]))
    return {"k": k, "provisional": k < MIN_MODELS, "n_images": int(difficulty.size),
            "members": fld.members, "synthetic": fld.synthetic, "notes": fld.notes, "hardest": rows, "groups": groups,
            "diet": diet_ranking(fld.right, difficulty), "image_keys": image_keys,
            "difficulty": difficulty.astype(np.float32), "wrong": wrong.astype(np.float32),
            "keys_digest": keys_digest(fld.keys, image_keys)}


def keys_digest(columns: dict[str, np.ndarray], names: list[str]) -> str:
    """sha256 of the image key columns ``names`` in their order (per_image.keys_digest: integers as
    int64, strings by value): two files in canonical order with the same digest hold the same
    images at the same positions."""
    return per_image.keys_digest(columns, names)


def task_difficulty(task: Task) -> dict[str, Any] | None:
    """summarize() of the task's public field, from the cache when the board's version and the set
    of files are unchanged; None when no public row has per-image outcomes. Three queries."""
    version = page_cache.board_version(task.benchmark.slug)
    entries = _entries(task)
    jobs = _jobs(task, entries)
    names = ",".join(f"{sid}:{jobs[sid].pk}:{jobs[sid].per_image.name}" for sid in sorted(jobs))
    digest = hashlib.sha256(f"{version}|{names}".encode()).hexdigest()[:24]
    key = f"difficulty:{SUMMARY_FORMAT}:{task.pk}:{digest}"
    try:
        found = default_cache.get(key)
    except Exception:  # noqa: BLE001 - the cache failing costs speed, never the page
        found = None
    if found is not None:
        return found or None
    fld = load_field(task, entries, jobs)
    summary = summarize(task, fld) if fld is not None else {}
    try:
        default_cache.set(key, summary, CACHE_SECONDS)
    except Exception:  # noqa: BLE001
        log.warning("difficulty of %s not cached", task.slug, exc_info=True)
    return summary or None


# --------------------------------------------------------------------------------------------
# The failure explorer: one submission's outcomes on one task.
# --------------------------------------------------------------------------------------------
def job_outcomes(job: EvaluationJob) -> dict[str, np.ndarray] | None:
    """A job's outcomes for the failure explorer, from its compact vectors (per_image.columns: a
    file is read only when they are not built yet): the canonical columns ``label``, ``pred``,
    ``top5_hit``, ``loss``, ``row`` (the image's row in the file), the image keys and
    ``income_group`` present, ``el2n`` (float32), and, when the file has thumbnails, ``thumb``
    (int32 [M]: thumbnail t's canonical position, -1 for an image of another part). None when the
    job has no per-image file. Raises PerImageError when its file does not read."""
    found, problems = per_image.outcome_vectors([job], fields=per_image.ARRAY_FIELDS)
    if job.pk in problems:
        raise per_image.PerImageError(problems[job.pk])
    vectors = found.get(job.pk)
    if vectors is None:
        return None
    outcomes = {**per_image.columns(vectors), "el2n": per_image.el2n(vectors)}
    positions = per_image.thumb_positions(vectors)
    if positions.size:
        outcomes["thumb"] = positions
    return outcomes


def explorer(task: Task, outcomes: dict[str, np.ndarray], summary: dict[str, Any] | None, by: str,
             *, failures: int = 16, successes: int = 4) -> list[dict[str, Any]]:
    """One submission's images on ``task`` (``outcomes`` as :func:`job_outcomes` gives them)
    grouped by ``by`` (a key of GROUP_KEYS the file has): per group its value (and class name),
    ``n``, ``errors``, ``error_rate`` (percent), and up to ``failures`` failures and ``successes``
    successes among the file's thumbnails (``thumbs``: position in the thumbnail arrays, true and
    predicted label and names, this model's EL2N, the field's difficulty and fraction of models
    wrong when known), the hardest for the field first. Raises ValueError for a key the file does
    not have."""
    if by not in GROUP_KEYS or by not in outcomes:
        raise ValueError(f"this task's outcomes cannot be grouped by {by!r}")
    columns, rows = outcomes, outcomes["row"]
    # the field's arrays are in the same canonical order when the file holds the same images
    same = summary is not None and bool(summary) and \
        keys_digest(columns, summary["image_keys"]) == summary["keys_digest"]
    field_difficulty = summary["difficulty"] if summary is not None and same else None
    field_wrong = summary["wrong"] if summary is not None and same else None
    positions = outcomes.get("thumb", np.empty(0, dtype=np.int64)).tolist()
    thumb_at = {int(p): t for t, p in enumerate(positions) if p >= 0}  # canonical position → thumbnail
    wrong = columns["pred"] != columns["label"]
    values, inverse, sizes = np.unique(columns[by], return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    errors = np.bincount(inverse, weights=wrong, minlength=len(values)).astype(np.int64)
    shown: list[dict[bool, list[dict[str, Any]]]] = [{True: [], False: []} for _ in values]
    for i, t in thumb_at.items():  # at most MAX_THUMBS
        label, pred = int(columns["label"][i]), int(columns["pred"][i])
        shown[int(inverse[i])][bool(wrong[i])].append({
            "thumb": t, "row": int(rows[i]), "index": int(columns["index"][i]), "label": label, "pred": pred,
            "label_name": class_name(task.slug, label), "pred_name": class_name(task.slug, pred),
            "el2n": float(columns["el2n"][i]),
            "difficulty": float(field_difficulty[i]) if field_difficulty is not None else None,
            "field_wrong": float(field_wrong[i]) if field_wrong is not None else None,
        })
    groups = []
    for g, value in enumerate(values):
        for items in shown[g].values():
            items.sort(key=lambda item: -(item["difficulty"] if item["difficulty"] is not None else item["el2n"]))
        groups.append({
            "value": value.item(), "name": class_name(task.slug, int(value)) if by == "label" else str(value.item()),
            "n": int(sizes[g]), "errors": int(errors[g]), "error_rate": 100.0 * int(errors[g]) / int(sizes[g]),
            "failures": shown[g][True][:failures], "successes": shown[g][False][:successes],
        })
    groups.sort(key=lambda g: -g["error_rate"])
    return groups


def thumbnail_png(arrays: dict[str, np.ndarray], position: int) -> bytes | None:
    """The PNG bytes of thumbnail ``position`` of a per-image file (uint8 [S, S, 3] RGB), or None
    when it has no such one (:func:`png_bytes`)."""
    thumbs = arrays.get("thumb")
    if thumbs is None or not 0 <= position < len(thumbs):
        return None
    return png_bytes(thumbs[position])


def png_bytes(pixels: np.ndarray) -> bytes:
    """The PNG bytes of uint8 [H, W, 3] (RGB) or [H, W, 4] (RGBA) pixels. Encoded with the
    standard library (the site has no Pillow): PNG 1.2 (ISO/IEC 15948), 8-bit truecolour (colour
    type 2, or 6 with alpha), filter 0 on every scanline, one zlib IDAT chunk. Raises ValueError
    for another shape."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ValueError(f"PNG pixels must be [H, W, 3 or 4], not {list(pixels.shape)}")
    height, width = pixels.shape[:2]
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2 if pixels.shape[2] == 3 else 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
