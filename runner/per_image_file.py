"""The per-image outcomes file (issue 17; shared/PROTOCOLS.md "Result keys"): which arrays it
holds, how it is written and how it is read back, checked. numpy only and no other runner module:
the site imports it (leaderboard/submissions/per_image.py and the runner API's upload) and its
image copies this one file (deploy/Dockerfile.site). What the arrays mean and how the runner
computes them: runner/metrics/per_image.py.

A file is a compressed ``.npz`` (``<name>.npy`` members, deflated, as ``np.savez_compressed``
writes them; ``np.load(path, allow_pickle=False)`` reads it) of 1-D arrays of one length N:
``index``, ``label``, ``pred`` (int64), ``top5_hit`` (bool), ``loss`` (nats, float64), ``el2n``
(float64), and the task's group keys (:func:`task_group_keys`): ``corruption`` (str),
``severity`` (int64), ``region``, ``income_group``, ``part`` (str: numpy unicode, never objects).

Optionally (issue 17 item 4, the failure explorer) a bounded sample of thumbnails, two arrays of
their own length M ≤ :data:`MAX_THUMBS`: ``thumb_row`` (int64 [M], distinct rows of the arrays
above, 0 ≤ row < N) and ``thumb`` (uint8 [M, S, S, 3], RGB, 1 ≤ S ≤ :data:`MAX_THUMB_SIDE`). Both
or neither; runner/thumbnails.py makes them.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

# name → dtype kind ("i": integer, "b": bool, "f": float, "U": unicode); every file has these.
REQUIRED = {"index": "i", "label": "i", "pred": "i", "top5_hit": "b", "loss": "f", "el2n": "f"}
# The group keys, and the tasks whose files carry them (no other task's file may).
GROUP_KEYS = {"corruption": "U", "severity": "i", "region": "U", "income_group": "U", "part": "U"}
_CORRUPTION_TASKS = ("cifar10-c", "cifar100-c", "imagenet-c")
# The optional thumbnail sample (module docstring): its own length M, not N.
THUMB_KEYS = {"thumb_row": "i", "thumb": "u"}
MAX_THUMBS = 4096
MAX_THUMB_SIDE = 32


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


def _open_zip(source: bytes | IO[bytes] | Path | str) -> zipfile.ZipFile:
    """The per-image file as a zip archive (an .npz is one); raises PerImageError for another file."""
    try:
        return zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise PerImageError(f"not an .npz file (a zip archive): {exc}") from exc


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
    archive = _open_zip(source)
    with archive:
        infos = archive.infolist()
        unpacked = sum(info.file_size for info in infos)
        if unpacked > max_unpacked_bytes:
            raise PerImageError(f"unpacks to {unpacked:,} bytes, more than the {max_unpacked_bytes:,} allowed")
        names = [info.filename for info in infos]
        keys = [n[: -len(".npy")] for n in names if n.endswith(".npy")]
        if len(keys) != len(names) or len(set(keys)) != len(keys):
            raise PerImageError(f"members must be distinct <name>.npy files, got {sorted(names)[:20]}")
        allowed = {**REQUIRED, **GROUP_KEYS, **THUMB_KEYS}
        unknown = sorted(set(keys) - set(allowed))
        if unknown:
            raise PerImageError(f"unknown arrays {unknown}; a per-image file holds {sorted(allowed)}")
        wanted = set(REQUIRED) | (set(task_group_keys(slug)) if slug is not None else set())
        missing = sorted(wanted - set(keys))
        if missing:
            raise PerImageError(f"lacks the arrays {missing}")
        if slug is not None and set(keys) - set(THUMB_KEYS) != wanted:
            raise PerImageError(f"{slug} files carry no {sorted(set(keys) - wanted - set(THUMB_KEYS))}")
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
        if key in THUMB_KEYS:
            continue
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
    _check_thumbs(arrays, n)
    return arrays


def _check_thumbs(arrays: dict[str, np.ndarray], n: int) -> None:
    present = [k for k in THUMB_KEYS if k in arrays]
    if not present:
        return
    if len(present) != len(THUMB_KEYS):
        raise PerImageError("thumb_row and thumb come together; the file has only " + present[0])
    rows, thumbs = arrays["thumb_row"], arrays["thumb"]
    if rows.ndim != 1 or rows.dtype.kind not in "iu":
        raise PerImageError(f"thumb_row must be 1-D integers, got {rows.dtype} of shape {list(rows.shape)}")
    if thumbs.dtype != np.uint8 or thumbs.ndim != 4 or thumbs.shape[3] != 3 or thumbs.shape[1] != thumbs.shape[2]:
        raise PerImageError(f"thumb must be uint8 [M, S, S, 3], got {thumbs.dtype} of shape {list(thumbs.shape)}")
    if not 1 <= thumbs.shape[1] <= MAX_THUMB_SIDE:
        raise PerImageError(f"thumbnails are at most {MAX_THUMB_SIDE}×{MAX_THUMB_SIDE}, got {thumbs.shape[1]}")
    if len(rows) != len(thumbs):
        raise PerImageError(f"{len(rows)} thumb_row entries for {len(thumbs)} thumbnails")
    if len(rows) > MAX_THUMBS:
        raise PerImageError(f"{len(rows)} thumbnails, more than the {MAX_THUMBS} allowed")
    if len(rows) and (rows.min() < 0 or rows.max() >= n or len(np.unique(rows)) != len(rows)):
        raise PerImageError(f"thumb_row must name distinct rows in 0–{n - 1}")


def read_thumbnails(source: bytes | IO[bytes] | Path | str) -> np.ndarray | None:
    """Only the ``thumb`` array of a per-image file (uint8 [M, S, S, 3]), checked as
    :func:`read_per_image` checks it but without reading the other arrays (a thumbnail request
    should not unpack ImageNet-C's half a gigabyte); None when the file has no thumbnails. Never
    unpickles. Raises PerImageError for a file that is not a zip or a ``thumb`` of another shape."""
    archive = _open_zip(source)
    with archive:
        try:
            info = archive.getinfo("thumb.npy")
        except KeyError:
            return None
        side = MAX_THUMB_SIDE
        if info.file_size > MAX_THUMBS * side * side * 3 + 4096:
            raise PerImageError(f"thumb unpacks to {info.file_size:,} bytes, more than thumbnails may")
        try:
            with archive.open(info) as member:
                thumbs = np.lib.format.read_array(member, allow_pickle=False)
        except (ValueError, zipfile.BadZipFile, OSError, EOFError) as exc:
            raise PerImageError(f"thumb is not a readable .npy array: {exc}") from exc
    if thumbs.dtype != np.uint8 or thumbs.ndim != 4 or thumbs.shape[3] != 3 or thumbs.shape[1] != thumbs.shape[2] \
            or not 1 <= thumbs.shape[1] <= MAX_THUMB_SIDE or len(thumbs) > MAX_THUMBS:
        raise PerImageError(f"thumb must be uint8 [M, S, S, 3], got {thumbs.dtype} of shape {list(thumbs.shape)}")
    return thumbs
