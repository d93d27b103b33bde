"""A job's per-image outcomes, as the site stores them (issue 17 item 1): the ``.npz`` a runner
uploads after the result it belongs to (``POST /api/runner/v1/jobs/<id>/per-image/``,
leaderboard/runners/views.py), kept in ``EvaluationJob.per_image``. What the arrays mean (names,
dtypes, units, the order of images) is runner/metrics/per_image.py's docstring; this module reads a
stored file back, checked again and never unpickled, and keeps its compact form. numpy only: the
site never imports torch.

The compact form (:class:`~leaderboard.submissions.models.OutcomeVectors`, :func:`outcome_vectors`)
is what the compare page, the difficulty pages and the board's tie refresh read instead of the
file: a file holds int64 labels and predictions, float64 losses and unicode group keys (56 bytes a
row for ImageNet-C's corruption names) that must be inflated, checked and sorted into the
canonical image order on every read; the compact form is sorted once and holds top-1 hits as bits
(0.47 MB for ImageNet-C's 3.75 M images), EL2N as float32, and the rest (labels, predictions,
top-5 bits, losses, key columns as codes) in one compressed column that only the explorer and one
reference row per difficulty summary open. It lives in the database, not the shared cache:
it is written once per file and read by every refresh and page, so an eviction would cost a
whole file read in the worker or a visitor's request at any time, and the database keeps it
exactly as long as the job (a rerun deletes jobs, and their vectors with them). A row is valid
for one file: ``source`` (the file's storage name, never reused for other bytes while the file
exists) and ``sha256`` (of the bytes, checked against the result's ``files.per_image.sha256``
where it names one); a new file or a new :data:`FORM` rebuilds it on the next read.
"""
from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterable
from typing import IO, Any, cast

import numpy as np
from django.db import transaction

from runner.per_image_file import PerImageError, read_per_image

from .models import EvaluationJob, OutcomeVectors

__all__ = ["FORM", "PerImageError", "check_against_result", "expected_images", "load_per_image", "named_sha256",
           "outcome_vectors", "same_images", "vectors_from_arrays"]

log = logging.getLogger(__name__)

FORM = 1  # bump when vectors_from_arrays changes what it stores: every row is rebuilt on its next read
# The image keys in sort order (boards/paired.py's IMAGE_KEYS less "part": only the primary part
# is scored) and the keys whose values are the sets a multi-set task's bootstrap resamples within.
IMAGE_KEYS = ("corruption", "severity", "region", "index")
SET_KEYS = ("corruption", "severity", "region")
META_FIELDS = ("job_id", "source", "sha256", "form", "n_images", "key_names", "keys_digest")
ARRAY_FIELDS = ("hits", "sets", "el2n", "thumbs", "detail")


def expected_images(job: EvaluationJob) -> int | None:
    """The number of images the job's result says its per-image file holds (``files.per_image.n``),
    or None when the result names no such file."""
    entry = _named(job)
    n = entry.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) else None


def named_sha256(job: EvaluationJob) -> str | None:
    """The sha256 (hex) the job's result names for its per-image file, None when it names none
    (the runner's upload is refused unless the file's bytes have this digest)."""
    sha = _named(job).get("sha256")
    return sha if isinstance(sha, str) and len(sha) == 64 else None


def _named(job: EvaluationJob) -> dict:
    result = job.result if isinstance(job.result, dict) else {}
    files = result.get("files")
    entry = files.get("per_image") if isinstance(files, dict) else None
    return entry if isinstance(entry, dict) else {}


TOP1_TOLERANCE = 1e-6  # percentage points: float rounding, far below one image of any task (100/N)


def check_against_result(arrays: dict[str, np.ndarray], result: Any) -> None:
    """Raise PerImageError when the per-image ``arrays`` (read_per_image's) describe other
    predictions than the ``result`` document they came with: the share of images whose ``pred``
    equals ``label`` (in the primary part, ``part == "main"`` where the file has parts), in
    percent, differs from the result's ``metrics.top1`` by more than :data:`TOP1_TOLERANCE`.

    Checked for the single-label tasks (digits, CIFAR, ImageNet val, -A, -R), whose top1 the
    runner computes from the same top-1 the file holds. Not checked: the -C sets (a
    ``corruption`` array; top1 is a mean over the 15 standard corruption × severity sets,
    runner/metrics/corruptions.py), the geographic sets (a ``region`` array; any of several
    classes is right and the file's label is the accepted class of highest probability, which
    equal logits can make differ from the top-1 the metric counted as a hit), and results without
    a finite top1. A runner's bug (a file of another run, outputs in another order) is refused at
    upload, before it can sway the paired ties and the difficulty pages, with both figures in
    the message."""
    metrics = result.get("metrics") if isinstance(result, dict) else None
    top1 = metrics.get("top1") if isinstance(metrics, dict) else None
    if "corruption" in arrays or "region" in arrays or isinstance(top1, bool) or not isinstance(top1, (int, float)):
        return
    if not np.isfinite(top1):
        return
    hit = np.asarray(arrays["pred"]) == np.asarray(arrays["label"])
    if "part" in arrays:
        hit = hit[np.asarray(arrays["part"]) == "main"]
    if not len(hit):
        return
    share = 100.0 * float(hit.mean())
    if abs(share - float(top1)) > TOP1_TOLERANCE:
        raise PerImageError(f"its predictions equal their labels for {share:.6f}% of the images, but the result it "
                            f"came with has top1 {float(top1):.6f}%: the file and the result describe different runs")


def load_per_image(job: EvaluationJob) -> dict[str, np.ndarray] | None:
    """The per-image arrays of ``job`` by name, each 1-D of length N (the task's images in its
    fixed order): ``index``, ``label``, ``pred`` (int64), ``top5_hit`` (bool), ``loss`` (nats) and
    ``el2n`` (float64), plus the task's group keys (``corruption`` and ``severity``, ``region``,
    ``income_group``, ``part``). None when the job has no stored file (not a classifier task, the
    runner has not uploaded it yet, or an older result). Raises PerImageError (a ValueError) if
    the stored file no longer reads as one, OSError if the storage cannot open it. Reads the whole
    file: pages and refreshes read :func:`outcome_vectors` instead."""
    if not job.per_image:
        return None
    with job.per_image.open("rb") as fh:
        return read_per_image(cast(IO[bytes], fh), slug=job.task.slug, expected_n=expected_images(job))


# --------------------------------------------------------------------------------------------
# The compact form
# --------------------------------------------------------------------------------------------
def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _from_npy(data: bytes | memoryview) -> np.ndarray:
    return np.load(io.BytesIO(bytes(data)), allow_pickle=False)


def _coded(column: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """(vocabulary, codes) of a string column (codes into its sorted distinct values, so codes
    sort as the strings do), (None, int64 values) of an integer one."""
    column = np.asarray(column)
    if column.dtype.kind == "U":
        vocab, codes = np.unique(column, return_inverse=True)
        return vocab, codes.ravel().astype(np.int64)
    return None, column.astype(np.int64)


def _digest(coded: dict[str, tuple[np.ndarray | None, np.ndarray]], names: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for name in names:
        vocab, codes = coded[name]
        head = f"{name}:U:{'|'.join(vocab.tolist())}" if vocab is not None else f"{name}:i"
        digest.update(f"{head}:{codes.size};".encode())
        digest.update(np.ascontiguousarray(codes, dtype="<i8").tobytes())
    return digest.hexdigest()


def keys_digest(columns: dict[str, np.ndarray], names: Iterable[str]) -> str:
    """sha256 of the image key columns ``names`` in their order, integers as int64 and strings by
    their values (so the widths numpy gave either never matter): two outcome sets in canonical
    order with the same digest hold the same images at the same positions."""
    names = list(names)
    return _digest({name: _coded(columns[name]) for name in names}, names)


def vectors_from_arrays(arrays: dict[str, np.ndarray]) -> OutcomeVectors:
    """The compact form of a per-image file's ``arrays`` (as :func:`load_per_image` returns them),
    unsaved and without its job, source or sha256.

    1. Only the primary part is scored where the file has parts (imagenet-r: "main").
    2. Images are sorted by their keys (``IMAGE_KEYS`` present: corruption, severity, region,
       index; a stable sort, as paired.align sorts them; strings by codes into their sorted
       values, which sort as the strings do), and ``keys_digest`` names that order.
    3. Stored in that order: top-1 hits (``pred == label``; for any-of tasks the file's label is
       already the accepted class ranked highest) as bits, each image's set code (``SET_KEYS``,
       numbered as paired.align numbers them) where the task has sets, EL2N as float32, each
       thumbnail's position, and ``detail``: label and pred in the smallest integer type, top-5
       bits, loss (float32), the file row of each image and the key columns (strings as codes
       into a sorted vocabulary), plus ``income_group`` where the file has it.
    Raises PerImageError naming a missing array, or when no image is of the primary part."""
    try:
        n_rows = len(arrays["index"])
        label, pred = np.asarray(arrays["label"]), np.asarray(arrays["pred"])
        el2n, loss, top5 = arrays["el2n"], arrays["loss"], arrays["top5_hit"]
    except KeyError as exc:
        raise PerImageError(f"per-image outcomes lack the array {exc.args[0]!r}") from None
    rows = np.arange(n_rows)
    if "part" in arrays:
        rows = rows[np.asarray(arrays["part"]) == "main"]
    if not rows.size:
        raise PerImageError("the file has no images of the primary part ('main'), the only one scored")
    names = [k for k in IMAGE_KEYS if k in arrays]
    coded = {k: _coded(np.asarray(arrays[k])[rows]) for k in (*names, "income_group") if k in arrays}
    order = np.lexsort([coded[k][1] for k in reversed(names)])
    rows = rows[order]
    coded = {k: (vocab, codes[order]) for k, (vocab, codes) in coded.items()}
    n = int(rows.size)
    detail: dict[str, np.ndarray] = {"row": rows.astype(np.min_scalar_type(max(n_rows - 1, 0))),
                                     "top5": np.packbits(np.asarray(top5, dtype=bool)[rows]),
                                     "loss": np.asarray(loss, dtype="<f4")[rows]}
    for name, values in (("label", label[rows]), ("pred", pred[rows])):
        detail[name] = values.astype(np.result_type(np.min_scalar_type(int(values.min(initial=0))),
                                                    np.min_scalar_type(int(values.max(initial=0)))))
    for name, (vocab, codes) in coded.items():
        if vocab is not None:
            detail[name] = codes.astype(np.min_scalar_type(max(len(vocab) - 1, 0)))
            detail[f"{name}__vocab"] = vocab
        else:
            detail[name] = codes
    sets = b""
    present = [k for k in SET_KEYS if k in coded]
    if present:
        codes = np.zeros(n, dtype=np.int64)
        for k in present:
            vocab, values = coded[k]
            inverse = values if vocab is not None else np.unique(values, return_inverse=True)[1].ravel()
            codes = codes * (int(inverse.max(initial=0)) + 1) + inverse
        sets = _npy(codes.astype(np.min_scalar_type(int(codes.max(initial=0)))))
    position_of_row = np.full(n_rows, -1, dtype="<i4")
    position_of_row[rows] = np.arange(n, dtype="<i4")
    thumb_rows = np.asarray(arrays.get("thumb_row", np.empty(0, dtype=np.int64)), dtype=np.int64)
    packed = io.BytesIO()
    np.savez_compressed(packed, **cast(dict[str, Any], detail))
    return OutcomeVectors(
        form=FORM, n_images=n, key_names=",".join(names), keys_digest=_digest(coded, names),
        hits=np.packbits(label[rows] == pred[rows]).tobytes(), sets=sets,
        el2n=np.asarray(el2n, dtype="<f4")[rows].tobytes(), thumbs=position_of_row[thumb_rows].tobytes(),
        detail=packed.getvalue())


def right(vectors: OutcomeVectors) -> np.ndarray:
    """Top-1 hits, bool [n_images], in canonical order."""
    return np.unpackbits(np.frombuffer(bytes(vectors.hits), dtype=np.uint8), count=vectors.n_images).astype(bool)


def set_codes(vectors: OutcomeVectors) -> np.ndarray | None:
    """Each image's set code (unsigned integers [n_images]) on a multi-set task, else None."""
    return _from_npy(vectors.sets) if len(vectors.sets) else None


def el2n(vectors: OutcomeVectors) -> np.ndarray:
    """EL2N per image, float32 [n_images], in canonical order."""
    return np.frombuffer(bytes(vectors.el2n), dtype="<f4")


def thumb_positions(vectors: OutcomeVectors) -> np.ndarray:
    """int32 [M]: thumbnail t's image position in canonical order (-1: an image of another part)."""
    return np.frombuffer(bytes(vectors.thumbs), dtype="<i4")


def columns(vectors: OutcomeVectors) -> dict[str, np.ndarray]:
    """The canonical columns of ``detail``: ``label``, ``pred`` (int64), ``top5_hit`` (bool),
    ``loss`` (float32), ``row`` (the image's row in the file), and the image keys and
    ``income_group`` present (strings back as numpy unicode), each [n_images]."""
    with np.load(io.BytesIO(bytes(vectors.detail)), allow_pickle=False) as stored:
        raw = {name: stored[name] for name in stored.files}
    n = vectors.n_images
    out = {"label": raw.pop("label").astype(np.int64), "pred": raw.pop("pred").astype(np.int64),
           "top5_hit": np.unpackbits(raw.pop("top5"), count=n).astype(bool), "loss": raw.pop("loss"),
           "row": raw.pop("row").astype(np.int64)}
    for name in [k for k in raw if not k.endswith("__vocab")]:
        vocab = raw.get(f"{name}__vocab")
        out[name] = vocab[raw[name]] if vocab is not None else raw[name]
    return out


def same_images(vectors: OutcomeVectors, reference: OutcomeVectors) -> None:
    """Check that two jobs' vectors describe the same images in the same canonical order, so their
    arrays pair position by position (what paired.align checks on whole files). Raises ValueError
    naming the difference."""
    if vectors.key_names != reference.key_names:
        raise ValueError(f"the two files describe images differently ({vectors.key_names} and "
                         f"{reference.key_names})")
    if vectors.n_images != reference.n_images:
        raise ValueError(f"the two results scored different numbers of images ({vectors.n_images} and "
                         f"{reference.n_images})")
    if vectors.keys_digest != reference.keys_digest:
        raise ValueError("the two results scored different images (their image keys differ)")


def _current(row: OutcomeVectors, job: EvaluationJob) -> bool:
    named = named_sha256(job)
    return row.form == FORM and row.source == job.per_image.name and (named is None or named == row.sha256)


def outcome_vectors(jobs: Iterable[EvaluationJob], *, fields: Iterable[str] = ("hits",)
                    ) -> tuple[dict[int, OutcomeVectors], dict[int, str]]:
    """The compact outcomes of ``jobs`` (those with a per-image file): ({job id: vectors}, {job
    id: why it has none}). ``fields`` are the array columns loaded at once (ARRAY_FIELDS; any
    other loads on first use, one query each).

    1. One query reads the stored rows of the jobs that have a file.
    2. A job whose row is missing or stale (:func:`_current`: another file, another sha256,
       another FORM) has its file read once (:func:`load_per_image`), compacted
       (:func:`vectors_from_arrays`) and its row written (update_or_create: two readers building
       at once both succeed, the second write wins with equal content).
    3. A file that does not read (PerImageError, OSError) is logged and reported in the second
       dict, with no row written, so the next read tries again."""
    wanted = [job for job in jobs if job.per_image]
    skip = set(ARRAY_FIELDS) - set(fields)
    stored = {row.job_id: row for row in OutcomeVectors.objects.filter(job_id__in=[j.pk for j in wanted])
              .defer(*skip)}
    found: dict[int, OutcomeVectors] = {}
    problems: dict[int, str] = {}
    for job in wanted:
        row = stored.get(job.pk)
        if row is not None and _current(row, job):
            found[job.pk] = row
            continue
        try:
            found[job.pk] = _build(job)
        except (PerImageError, OSError) as exc:
            log.warning("per-image outcomes of job %s unreadable: %s", job.pk, exc)
            problems[job.pk] = str(exc)
    return found, problems


def _build(job: EvaluationJob) -> OutcomeVectors:
    with job.per_image.open("rb") as fh:
        payload = fh.read()
    sha = hashlib.sha256(payload).hexdigest()
    named = named_sha256(job)
    if named is not None and named != sha:
        raise PerImageError(f"the stored file's sha256 {sha} differs from the {named} its result names")
    arrays = read_per_image(payload, slug=job.task.slug, expected_n=expected_images(job))
    built = vectors_from_arrays(arrays)
    values = {f: getattr(built, f) for f in ("form", "n_images", "key_names", "keys_digest", *ARRAY_FIELDS)}
    with transaction.atomic():  # a savepoint inside a caller's transaction: a race costs no rollback
        row, _ = OutcomeVectors.objects.update_or_create(job=job, defaults={
            "source": job.per_image.name or "", "sha256": sha, **values})
    return row
