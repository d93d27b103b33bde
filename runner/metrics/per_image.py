"""Per-image outcomes of a classifier task (issue 17; shared/PROTOCOLS.md, "Result keys" and "EL2N
and GraNd"): what each image of the task's fixed order got from one model, kept by the trusted
runner (labels never enter the sandbox) and stored by the site beside the result, for paired
tests, difficulty across submissions and the failure explorer. Pure numpy: the site imports
:func:`read_per_image` to check what a runner uploads.

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

The scored logits z are the model's outputs over the task's classes, float64; for ImageNet-A/R
the 200 subset columns (the masking of the metrics, PROTOCOLS "ImageNet validation, -A, -R").
Strings are numpy unicode arrays, never objects: the site loads the file with
``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from runner.metrics.classification import TOPK, hits, hits_any, padded, task_subset

# name → dtype kind ("i": integer, "b": bool, "f": float, "U": unicode); every file has these.
REQUIRED = {"index": "i", "label": "i", "pred": "i", "top5_hit": "b", "loss": "f", "el2n": "f"}
# The group keys, and the tasks whose files carry them (no other task's file may).
GROUP_KEYS = {"corruption": "U", "severity": "i", "region": "U", "income_group": "U", "part": "U"}
_CORRUPTION_TASKS = ("cifar10-c", "cifar100-c", "imagenet-c")


def task_group_keys(slug: str) -> tuple[str, ...]:
    """The group keys a classifier task's per-image file carries, in file order."""
    if slug in _CORRUPTION_TASKS:
        return ("corruption", "severity")
    if slug == "geode":
        return ("region",)
    if slug == "dollarstreet":
        return ("region", "income_group")
    if slug == "imagenet-r":
        return ("part",)
    return ()


def file_name(result_path: Path | str) -> Path:
    """Where `runner run --out R.json` puts the per-image file: ``R.per_image.npz`` beside it (a
    path without ``.json`` keeps its whole name: ``R`` → ``R.per_image.npz``)."""
    path = Path(result_path)
    stem = path.name[: -len(".json")] if path.name.lower().endswith(".json") else path.name
    return path.with_name(f"{stem}.per_image.npz")


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
    z = np.asarray(logits, dtype=np.float64)
    if subset is not None:
        z = z[:, np.asarray(subset)]
    if z.ndim != 2:
        raise ValueError(f"logits must be [N, C], got shape {list(z.shape)}")
    n, classes = z.shape
    shifted = z - z.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(n)
    if accepted is not None:
        table = np.asarray(accepted, dtype=np.int64)
        if table.ndim != 2 or len(table) != n:
            raise ValueError(f"accepted must be [{n}, A], got shape {list(table.shape)}")
        if table.size and (table.max() >= classes or ((table < 0) & (table != -1)).any()):
            raise ValueError(f"accepted indices must lie in 0–{classes - 1} (or be -1, padding)")
        if ((table < 0).all(axis=1)).any():
            raise ValueError("every image needs at least one accepted index")
        gathered = np.where(table >= 0, log_p[rows[:, None], np.maximum(table, 0)], -np.inf)
        label = table[rows, gathered.argmax(axis=1)]
    else:
        if labels is None:
            raise ValueError("give labels or accepted")
        label = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(label) != n:
            raise ValueError(f"{len(label)} labels for {n} rows of logits")
        if n and (label.min() < 0 or label.max() >= classes):
            raise ValueError(f"labels must lie in 0–{classes - 1}")
    loss = -log_p[rows, label]
    diff = np.exp(log_p)
    diff[rows, label] -= 1.0
    el2n = np.sqrt(np.einsum("ij,ij->i", diff, diff))
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


_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the zip format's earliest date: no clock in the bytes


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """``arrays`` as the bytes of a compressed ``.npz``, as ``np.savez_compressed`` writes them
    (``<name>.npy`` members, deflated; ``np.load`` reads it) but with every member dated 1980-01-01,
    so that the same arrays always give the same bytes and sha256 (`runner run` and `runner work`
    agree to the byte)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
    return buffer.getvalue()


def write_per_image(path: Path | str, arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Write ``arrays`` to ``path`` (:func:`npz_bytes`, the name as given: numpy's savez would
    append ``.npz`` to a path); return the result document's ``files.per_image`` entry:
    ``{"name": file name, "sha256": hex digest, "n": images, "bytes": size}``. Raises ValueError
    for an object array (never written: the site refuses pickles)."""
    payload = npz_bytes(arrays)
    Path(path).write_bytes(payload)
    return {
        "name": Path(path).name,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "n": int(len(arrays["index"])),
        "bytes": len(payload),
    }


# --------------------------------------------------------------------------------------------
# Reading a file someone else wrote (the site reads what a runner uploads).
# --------------------------------------------------------------------------------------------
MAX_UNPACKED_BYTES = 1 << 30  # ImageNet-C's 4.75 M images come to about 0.5 GiB unpacked
MAX_FILE_BYTES = 256 << 20  # what the site accepts (its MAX_PER_IMAGE_BYTES may lower it)


class PerImageError(ValueError):
    """A per-image file that is not what this module writes; the message says what is wrong."""


def read_per_image(
    source: bytes | IO[bytes] | Path | str,
    *,
    slug: str | None = None,
    expected_n: int | None = None,
    max_unpacked_bytes: int = MAX_UNPACKED_BYTES,
) -> dict[str, np.ndarray]:
    """Load and check a per-image file: the arrays by name (module docstring).

    Never unpickles (``allow_pickle=False``). Raises PerImageError when the file is not a zip
    (.npz), unpacks to more than ``max_unpacked_bytes`` (by the zip's own sizes, which the zip
    reader enforces), lacks a required array, has an array no file has or, given ``slug``, the
    task's files do not, holds an object (pickled) array, an array that is not 1-D, of the wrong
    kind of dtype, of another length than the others or than ``expected_n``, a loss that is not
    finite and ≥ 0 or an EL2N outside [0, √2]."""
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise PerImageError(f"not an .npz file (a zip archive): {exc}") from exc
    with archive:
        infos = archive.infolist()
        unpacked = sum(info.file_size for info in infos)
        if unpacked > max_unpacked_bytes:
            raise PerImageError(f"unpacks to {unpacked:,} bytes, more than the {max_unpacked_bytes:,} allowed")
        names = [info.filename for info in infos]
        keys = [n[: -len(".npy")] for n in names if n.endswith(".npy")]
        if len(keys) != len(names) or len(set(keys)) != len(keys):
            raise PerImageError(f"members must be distinct <name>.npy files, got {sorted(names)[:20]}")
        allowed = {**REQUIRED, **GROUP_KEYS}
        unknown = sorted(set(keys) - set(allowed))
        if unknown:
            raise PerImageError(f"unknown arrays {unknown}; a per-image file holds {sorted(allowed)}")
        wanted = set(REQUIRED) | (set(task_group_keys(slug)) if slug is not None else set())
        missing = sorted(wanted - set(keys))
        if missing:
            raise PerImageError(f"lacks the arrays {missing}")
        if slug is not None and set(keys) != wanted:
            raise PerImageError(f"{slug} files carry no {sorted(set(keys) - wanted)}")
        arrays: dict[str, np.ndarray] = {}
        for key in keys:
            try:
                with archive.open(f"{key}.npy") as member:
                    array = np.lib.format.read_array(member, allow_pickle=False)
            except ValueError as exc:
                if "pickle" in str(exc).lower() or "object" in str(exc).lower():
                    raise PerImageError(f"{key} holds Python objects (a pickle); arrays must be plain "
                                        "numbers, booleans or unicode strings") from exc
                raise PerImageError(f"{key} is not a readable .npy array: {exc}") from exc
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise PerImageError(f"{key} is not a readable .npy array: {exc}") from exc
            arrays[key] = array
    return _checked(arrays, expected_n)


def _checked(arrays: dict[str, np.ndarray], expected_n: int | None) -> dict[str, np.ndarray]:
    kinds = {**REQUIRED, **GROUP_KEYS}
    lengths = set()
    for key, array in arrays.items():
        if array.ndim != 1:
            raise PerImageError(f"{key} must be 1-D, got shape {list(array.shape)}")
        kind = array.dtype.kind
        if kind == "u" and kinds[key] == "i":
            kind = "i"
        if kind != kinds[key]:
            raise PerImageError(f"{key} has dtype {array.dtype}; it must be of kind {kinds[key]!r} "
                                "(i: integer, b: bool, f: float, U: unicode)")
        lengths.add(len(array))
    if len(lengths) != 1:
        raise PerImageError(f"arrays differ in length: { {k: len(a) for k, a in arrays.items()} }")
    n = lengths.pop()
    if n == 0:
        raise PerImageError("the file has no images")
    if expected_n is not None and n != expected_n:
        raise PerImageError(f"{n} images, but the result names {expected_n}")
    if not (np.isfinite(arrays["loss"]).all() and (arrays["loss"] >= 0).all()):
        raise PerImageError("loss must be finite and at least 0 (nats)")
    el2n = arrays["el2n"]
    if not (np.isfinite(el2n).all() and (el2n >= 0).all() and (el2n <= np.sqrt(2) + 1e-9).all()):
        raise PerImageError("el2n must lie in [0, √2]")
    return arrays
