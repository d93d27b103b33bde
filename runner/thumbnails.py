"""Thumbnails for the failure explorer (issue 17 item 4): a bounded sample of a classifier task's
images, stored in the per-image file as ``thumb_row`` (int64 [M], rows of the file's arrays) and
``thumb`` (uint8 [M, S, S, 3], RGB, S ≤ 32; runner/per_image_file.py checks both). Every dataset
of the catalogue is public, so the trusted runner may show its images; labels never enter the
sandbox, and this runs in the runner's own process after scoring.

The sample, per group key of the file (``region``, ``income_group``, ``corruption``, and the true
class ``label``): for each value, up to :data:`FAILURES` failures (``pred != label``) and up to
:data:`SUCCESSES` successes, drawn in a fixed pseudo-random order (seed 0), so a rerun of the same
model picks the same images; a key with many values (CIFAR-100's or ImageNet's classes) gets fewer
per value, at most :data:`PER_KEY` rows per key. The union is capped at ``MAX_THUMBS``. Thumbnails
are the reader's model input (digits upscaled ×4 from 0–16 grey levels; CIFAR's 32×32 as is; image
files after their 224 crop) resized to at most 32×32 with PIL's box filter.

Cost: one read of each sampled image (a few thousand at most), no model call; ``with_thumbnails``
gives the measured cost.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image

from runner.per_image_file import MAX_THUMB_SIDE, MAX_THUMBS

FAILURES = 16
SUCCESSES = 4
PER_KEY = 640  # rows per group key at most: 32 values get the full 16 + 4
THUMB_KEY_ORDER = ("region", "income_group", "corruption", "label")


def sample_rows(arrays: Mapping[str, np.ndarray], *, seed: int = 0) -> np.ndarray:
    """Sorted distinct rows (int64) of the per-image ``arrays`` to thumbnail (module docstring).
    Only rows of the primary part where the file has parts (imagenet-r: "main")."""
    n = len(arrays["index"])
    order = np.random.default_rng(seed).permutation(n)
    if "part" in arrays:
        order = order[np.asarray(arrays["part"])[order] == "main"]
    wrong = (np.asarray(arrays["pred"]) != np.asarray(arrays["label"]))[order]
    chosen: list[np.ndarray] = []
    for key in THUMB_KEY_ORDER:
        if key not in arrays:
            continue
        values = np.asarray(arrays[key])[order]
        # group by value in one stable sort (O(N log N) whatever the number of values), keeping
        # the pseudo-random order within each group
        by_value = np.argsort(values, kind="stable")
        starts = np.flatnonzero(np.r_[True, values[by_value][1:] != values[by_value][:-1]])
        share = max(1, PER_KEY // max(1, len(starts)))
        fail_quota = max(1, min(FAILURES, share * FAILURES // (FAILURES + SUCCESSES)))
        ok_quota = max(1, min(SUCCESSES, share - fail_quota)) if share > 1 else 0
        for members in np.split(by_value, starts[1:]):
            chosen.append(order[members[wrong[members]][:fail_quota]])
            chosen.append(order[members[~wrong[members]][:ok_quota]])
    rows = np.unique(np.concatenate(chosen)).astype(np.int64) if chosen else np.empty(0, dtype=np.int64)
    return rows[:MAX_THUMBS]


def image_at(reader: Any, position: int) -> np.ndarray | None:
    """The reader's item at ``position`` as uint8 [H, W, 3] RGB, or None for a reader this module
    cannot address by position (no thumbnails then)."""
    from runner.datasets.images import load_file
    from runner.datasets.readers import ArrayReader, CorruptionArrayReader, ImageFileReader

    if isinstance(reader, ArrayReader):
        image = np.asarray(reader.images[position], dtype=np.float64) * (255.0 / reader.divisor)
        pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    elif isinstance(reader, CorruptionArrayReader):
        offset = position
        for block in reader.blocks:
            size = block.stop - block.start
            if offset < size:
                pixels = np.asarray(np.load(block.path, mmap_mode="r")[block.start + offset], dtype=np.uint8)
                break
            offset -= size
        else:
            return None
    elif isinstance(reader, ImageFileReader):
        offset = position
        for image_set in reader.sets:
            if offset < len(image_set.relpaths):
                pixels = load_file(f"{image_set.root}/{image_set.relpaths[offset]}", reader.mode)
                break
            offset -= len(image_set.relpaths)
        else:
            return None
    else:
        return None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return pixels


def thumbnail(pixels: np.ndarray, side: int) -> np.ndarray:
    """uint8 [side, side, 3] from uint8 [H, W, 3]: PIL's box filter when shrinking, nearest
    neighbour when enlarging (digits' 8×8 stay sharp squares)."""
    image = Image.fromarray(pixels, "RGB")
    resample = Image.Resampling.BOX if min(pixels.shape[:2]) >= side else Image.Resampling.NEAREST
    return np.asarray(image.resize((side, side), resample), dtype=np.uint8)


def with_thumbnails(data: Any, arrays: dict[str, np.ndarray], *, workers: int | None = None) -> dict[str, np.ndarray]:
    """``arrays`` (runner.metrics.per_image.per_image_arrays of ``data``, a TaskData) plus
    ``thumb_row`` and ``thumb`` for the :func:`sample_rows` sample; ``arrays`` unchanged when a
    reader cannot address its items by position. Thumbnails are square: ``MAX_THUMB_SIDE`` (32).
    Images are read and reduced on ``workers`` threads (default: the CPUs, at most 16; PIL's
    decoding and resizing release the GIL). Measured: 10 ms an image for 500×375 JPEGs through the
    ImageNet preprocessing on the loaded 2-core development host, so ImageNet-val's sample (one
    image per class, 1,000) costs at most about 10 s, against the tens of minutes its 50,000
    images take to evaluate."""
    rows = sample_rows(arrays).tolist()
    spans = []
    position = 0
    for reader in data.parts.values():
        spans.append((position, reader))
        position += len(reader)

    def one(row: int) -> np.ndarray | None:
        for start, reader in spans:
            if start <= row < start + len(reader):
                pixels = image_at(reader, row - start)
                return None if pixels is None else thumbnail(pixels, MAX_THUMB_SIDE)
        return None

    if not rows:
        return arrays
    with ThreadPoolExecutor(max_workers=workers or min(16, os.cpu_count() or 1)) as pool:
        thumbs = list(pool.map(one, rows))
    done = [t for t in thumbs if t is not None]
    if len(done) != len(rows):
        return arrays
    return {**arrays, "thumb_row": np.asarray(rows, dtype=np.int64), "thumb": np.stack(done)}
