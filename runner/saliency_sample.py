"""Saliency maps of a classifier task's sample, chosen and bounded by the trusted runner (issue 17
item 5; shared/PROTOCOLS.md "Saliency"). The methods are runner/saliency.py; they run in the sandbox
beside the submitted model (runner/sandboxed/saliency_server.py) on images this process picks
after scoring: labels never enter the sandbox, only the images and the class to explain (the
model's own top-1).

The sample (:func:`sample_rows`): per value of the task's group key (``region`` for GeoDE and
Dollar Street, ``corruption`` for the -C sets, else one group: the whole task) up to
:data:`FAILURES` failures (top-1 ≠ label) and :data:`SUCCESSES` successes, in a fixed
pseudo-random order (seed 0, the order runner/thumbnails.py draws its sample in, so a map's image
usually has a thumbnail), at most :data:`MAX_ROWS` per task; imagenet-r takes its renditions only.

The bound (:func:`explain_task`): at most :data:`BUDGET_FRACTION` (10%) of the task's evaluation
time so far (model load, contract checks and every prediction) is spent on saliency, measured on
the runner's clock. The first request holds :data:`FIRST_CHUNK` images; the seconds per image it
took size the next requests to what the budget has left; a request that runs past the budget by
more than :data:`GRACE_S` is stopped (the server is then discarded, the result is kept). An
operator turns saliency off with ``RUNNER_SALIENCY=off`` (``runner work --no-saliency``,
docs/operations.md).

What the result document holds under ``saliency`` (JSON, about 23 kB for 64 maps: 16 KiB of maps
in base64):

==================  ============================================================================
``format``          1
``side``            S (16): each map is S×S, the model input's H×W averaged down by area
``maps``            base64 of uint8 [M, S, S], row-major; value/255 is the saliency in [0, 1]
                    (0 the least salient pixel of that image, ≈1 the most: per-map min-max)
``rows``            [M] rows of the per-image file (``files.per_image``) the maps belong to
``index``           [M] the images' ``index`` there (canonical position in the dataset)
``target``          [M] the class explained: the model's top-1 (the model's output index)
``failure``         [M] true where the top-1 is wrong
``group_key``       the key grouping the sample ("region", "corruption") or null
``method``          "gradcam++", "smoothgrad", "occlusion", ... (runner/saliency.py names)
``layer``           the dotted layer for the CAM methods, else null
``params``          the method's parameters (copies, sigma, seed; window, stride, fill, score)
``seconds``         saliency time on the runner's clock; ``budget_s`` its bound
``requested``       rows in the sample; M < requested when the budget ran out
``error``           present when the model server could not compute them (M may be 0)
==================  ============================================================================
The whole key is absent when saliency is off; the result never fails because of saliency.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from runner.metrics.classification import task_subset
from runner.spec import ErrorKind, EvaluationError
from runner.untrusted import printable

log = logging.getLogger(__name__)

SWITCH_ENV = "RUNNER_SALIENCY"
FAILURES, SUCCESSES = 8, 8
MAX_ROWS = 64
SIDE = 16
BUDGET_FRACTION = 0.10
FIRST_CHUNK = 2
MAX_CHUNK = 16
GRACE_S = 30.0
GROUP_KEYS = ("region", "corruption")
# Occlusion's fill, the per-channel training mean in [0, 1] (PROTOCOLS): CIFAR-10/100 as
# torchvision's references publish them, ImageNet's for every ImageNet-sized task; digits (and
# anything else) the mean of the images sent.
TRAINING_MEAN = {
    "cifar100": (0.5071, 0.4865, 0.4409),
    "cifar10": (0.4914, 0.4822, 0.4465),
    "imagenet": (0.485, 0.456, 0.406),
}


def enabled() -> bool:
    """False when the operator set RUNNER_SALIENCY to off, 0, false or no (read at each call)."""
    return os.environ.get(SWITCH_ENV, "on").strip().lower() not in ("off", "0", "false", "no")


def training_mean(slug: str) -> list[float] | None:
    """Occlusion's per-channel fill for classifier task ``slug`` (None: the images' own mean)."""
    for prefix in ("cifar100", "cifar10"):
        if slug.startswith(prefix):
            return list(TRAINING_MEAN[prefix])
    if slug.startswith("imagenet") or slug in ("geode", "dollarstreet"):
        return list(TRAINING_MEAN["imagenet"])
    return None


def sample_rows(arrays: Mapping[str, np.ndarray], *, seed: int = 0, max_rows: int = MAX_ROWS) -> np.ndarray:
    """Rows (int64, ascending) of the per-image ``arrays`` (runner.metrics.per_image: ``pred``,
    ``label`` and the group keys) to explain (module docstring): per group value the first
    FAILURES failures and SUCCESSES successes of a seeded permutation, groups taken in turn
    (value order) until ``max_rows``."""
    n = len(arrays["pred"])
    order = np.random.default_rng(seed).permutation(n)
    if "part" in arrays:
        order = order[np.asarray(arrays["part"])[order] == "main"]
    wrong = (np.asarray(arrays["pred"]) != np.asarray(arrays["label"]))[order]
    key = next((k for k in GROUP_KEYS if k in arrays), None)
    values = np.asarray(arrays[key])[order] if key else np.zeros(len(order), dtype=np.int64)
    queues = []
    for value in np.unique(values):
        here = values == value
        picked = list(order[here & wrong][:FAILURES]) + list(order[here & ~wrong][:SUCCESSES])
        queues.append(picked)
    chosen: list[int] = []
    depth = 0
    while len(chosen) < max_rows and any(depth < len(q) for q in queues):
        chosen.extend(int(q[depth]) for q in queues if depth < len(q))
        depth += 1
    return np.array(sorted(chosen[:max_rows]), dtype=np.int64)


def inputs_at(reader: Any, positions: np.ndarray) -> np.ndarray | None:
    """The model inputs (float32 [m, C, H, W] in [0, 1], exactly as evaluation fed them) of the
    reader's items at ``positions``, or None for a reader this module cannot address."""
    from runner.datasets.readers import ArrayReader, CorruptionArrayReader, ImageFileReader, ImageSet

    positions = np.asarray(positions, dtype=np.int64)
    if isinstance(reader, ArrayReader):
        chunk = np.asarray(reader.images[positions]).transpose(0, 3, 1, 2)
        return np.ascontiguousarray(chunk, dtype=np.float32) / np.float32(reader.divisor)
    if isinstance(reader, CorruptionArrayReader):
        out = []
        for position in positions.tolist():
            for block in reader.blocks:
                size = block.stop - block.start
                if position < size:
                    out.append(np.asarray(np.load(block.path, mmap_mode="r")[block.start + position]))
                    break
                position -= size
            else:
                return None
        return np.ascontiguousarray(np.stack(out).transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)
    if isinstance(reader, ImageFileReader):
        files = []
        for position in positions.tolist():
            for image_set in reader.sets:
                if position < len(image_set.relpaths):
                    files.append(ImageSet(image_set.root, [image_set.relpaths[position]]))
                    break
                position -= len(image_set.relpaths)
            else:
                return None
        picked = ImageFileReader(reader.name, files, reader.mode, reader.targets, {})
        batches = [b.inputs for b in picked.batches(len(positions), device="cpu")]
        arrays = [b.detach().cpu().numpy() if hasattr(b, "detach") else np.asarray(b) for b in batches]
        return np.concatenate(arrays).astype(np.float32)
    return None


def _rows_by_part(data: Any, rows: np.ndarray) -> list[tuple[Any, np.ndarray, np.ndarray]]:
    """(reader, positions in it, the rows they are) per part, in the file's part order."""
    out, start = [], 0
    for reader in data.parts.values():
        here = rows[(rows >= start) & (rows < start + len(reader))]
        if len(here):
            out.append((reader, here - start, here))
        start += len(reader)
    return out


def explain_task(
    server: Any,
    slug: str,
    data: Any,
    arrays: Mapping[str, np.ndarray],
    *,
    evaluation_s: float,
    deadline: float | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, Any] | None:
    """The ``saliency`` entry of a classifier result (module docstring), computed on ``server``
    (a ModelServer) for ``data`` (the task's TaskData) whose per-image ``arrays`` are known;
    ``evaluation_s`` the task's evaluation time so far (the budget's base). None when saliency
    is off or the sample is empty. Raises EvaluationError only for LEASE_EXPIRED (``cancel``)."""
    if not enabled():
        return None
    rows = sample_rows(arrays)
    if not len(rows):
        return None
    started = time.perf_counter()
    budget = BUDGET_FRACTION * max(evaluation_s, 0.0)
    subset = task_subset(slug)
    pred = np.asarray(arrays["pred"], dtype=np.int64)
    entry: dict[str, Any] = {"format": 1, "side": SIDE, "budget_s": round(budget, 3), "requested": len(rows)}
    done_rows: list[np.ndarray] = []
    maps: list[np.ndarray] = []
    told: dict[str, Any] = {}
    per_image_s: float | None = None
    try:
        for reader, positions, part_rows in _rows_by_part(data, rows):
            at = 0
            while at < len(positions):
                spent = time.perf_counter() - started
                if per_image_s is None:
                    size = FIRST_CHUNK
                else:
                    size = min(MAX_CHUNK, int((budget - spent) / max(per_image_s, 1e-6)))
                if size < 1:
                    raise _OverBudget
                images = inputs_at(reader, positions[at : at + size])
                if images is None:
                    entry["error"] = "this dataset's images cannot be read by position"
                    raise _OverBudget
                here = part_rows[at : at + len(images)]
                targets = [int(subset[p]) if subset is not None else int(p) for p in pred[here]]
                request = {"method": "auto", "targets": targets, "fill": training_mean(slug), "side": SIDE}
                call_started = time.perf_counter()
                call_deadline = call_started + max(budget - spent, 0.0) + GRACE_S
                if deadline is not None:
                    call_deadline = min(call_deadline, deadline)
                got, told = server.saliency(images, request, deadline=call_deadline, cancel=cancel)
                per_image_s = (time.perf_counter() - call_started) / len(images)
                maps.append(np.asarray(got, dtype=np.uint8))
                done_rows.append(here)
                at += len(images)
    except _OverBudget:
        pass  # the budget ran out: keep the maps made so far (the entry records the budget it had)
    except EvaluationError as exc:
        if exc.kind == ErrorKind.LEASE_EXPIRED:
            raise
        entry["error"] = exc.message[:600]
        log.warning("saliency maps stopped: %s", exc.message[:300])
    done = np.concatenate(done_rows) if done_rows else np.zeros(0, dtype=np.int64)
    stacked = np.concatenate(maps) if maps else np.zeros((0, SIDE, SIDE), dtype=np.uint8)
    entry.update(
        {
            "method": _known_method(told.get("saliency_method")),
            "layer": printable(told["saliency_layer"], keep_newlines=False)[:200]
            if isinstance(told.get("saliency_layer"), str)
            else None,
            "params": _json_object(told.get("saliency_params")),
            "rows": done.tolist(),
            "index": np.asarray(arrays["index"])[done].tolist(),
            "target": [int(subset[p]) if subset is not None else int(p) for p in pred[done]],
            "failure": (pred[done] != np.asarray(arrays["label"])[done]).tolist(),
            "group_key": next((k for k in GROUP_KEYS if k in arrays), None),
            "maps": base64.b64encode(np.ascontiguousarray(stacked).tobytes()).decode("ascii"),
            "seconds": round(time.perf_counter() - started, 3),
        }
    )
    return entry


def _known_method(name: Any) -> str | None:
    """The child's method name, kept only when it is one of runner/saliency.py's."""
    from runner.saliency_maps import METHODS

    return name if isinstance(name, str) and name in METHODS else None


def _json_object(text: Any) -> dict[str, Any]:
    """The child's parameters (JSON text in its answer): kept only when they are a small object
    of scalars and short lists."""
    import json

    if not isinstance(text, str) or len(text) > 2000:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k)[:40]: v for k, v in value.items() if isinstance(v, (int, float, str, bool, list))}


def decode_maps(entry: Mapping[str, Any]) -> np.ndarray:
    """uint8 [M, S, S] from a result's ``saliency`` entry (what the site and H7's explorer read).
    Raises ValueError when the bytes do not match ``rows`` and ``side``."""
    side, count = int(entry["side"]), len(entry["rows"])
    raw = np.frombuffer(base64.b64decode(entry["maps"]), dtype=np.uint8)
    if raw.size != count * side * side:
        raise ValueError(f"saliency maps hold {raw.size} bytes, not {count}×{side}×{side}")
    return raw.reshape(count, side, side)


class _OverBudget(Exception):
    """The budget (or the readable images) ran out: keep what is done."""
