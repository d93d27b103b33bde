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

The methods (runner/saliency_methods.py): every method the format allows, on the same images
(``auto``: Grad-CAM++, NormGrad and Smooth Grad-CAM++ for .pt2 and .safetensors, SmoothGrad for
TorchScript, whose loaded submodules refuse forward hooks, occlusion for ONNX; SmoothGrad also for
a layer format whose model has no convolution), or the operator's ``RUNNER_SALIENCY_METHODS``.

The bound (:func:`explain_task`): at most :data:`BUDGET_FRACTION` (10%) of the task's evaluation
time so far (model load, contract checks and every prediction) is spent on saliency, all methods
together, measured on the runner's clock. Methods run one after the other over the whole sample,
cheapest first; each method's first request holds :data:`FIRST_CHUNK` images (at least the
model's fixed batch); the first method's always runs, a later method's only when it is predicted
to fit what is left (the method before it's seconds scaled by passes per image); the seconds per
image it took size that method's next requests to what the budget has left; a request that runs
past the budget by more than :data:`GRACE_S` is stopped (the server is then discarded, the result is kept). A model
exported with a fixed batch size gets the maps too: the sandbox feeds it exactly the sizes it
accepts (saliency_server.py). An operator turns saliency off with ``RUNNER_SALIENCY=off``
(``runner work --no-saliency``, docs/operations.md).

What the result document holds under ``saliency`` (JSON, about 23 kB per method for 64 maps):

==================  ============================================================================
``format``          2 (format 1, written before, held one method's fields at the top level:
                    ``method``, ``layer``, ``params``, ``maps`` with ``rows`` the sample's rows
                    that have a map; the site still reads it)
``side``            S (16): each map is S×S, the model input's H×W averaged down by area
``rows``            [M] rows of the per-image file (``files.per_image``) that some method mapped
``index``           [M] the images' ``index`` there (canonical position in the dataset)
``target``          [M] the class explained: the model's top-1 (the model's output index)
``failure``         [M] true where the top-1 is wrong
``group_key``       the key grouping the sample ("region", "corruption") or null
``asked``           the operator's setting: "auto" or the list of method names
``methods``         one object per method, in the order run:
  ``method``        a runner/saliency.py name ("gradcam++", "normgrad", "smooth-gradcam++",
                    "smoothgrad", "occlusion", "gradcam")
  ``layer``         the dotted layer for the CAM methods, else null
  ``params``        the method's parameters (copies, sigma, seed; window, stride, fill, score;
                    graph_node; selective)
  ``rows``          [m] rows of the per-image file this method mapped (a subset of ``rows``)
  ``maps``          base64 of uint8 [m, S, S], row-major, aligned with this method's ``rows``;
                    value/255 the saliency in [0, 1] (per-map min-max: 0 least, ≈1 most salient)
  ``seconds``       this method's time on the runner's clock
  ``skipped``       present when it did not run: why (the format cannot, or the budget was spent)
  ``error``         present when the model server could not compute it (m may be 0)
``seconds``         saliency time on the runner's clock, all methods; ``budget_s`` its bound
``requested``       rows in the sample; a method's m < requested when the budget ran out
``error``           present when the operator's method list could not be read (no methods run)
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
from runner.saliency_methods import FALLBACK, LAYER_FORMATS, METHODS_ENV, parse_methods, passes, plan
from runner.spec import ErrorKind, EvaluationError
from runner.untrusted import printable

log = logging.getLogger(__name__)

SWITCH_ENV = "RUNNER_SALIENCY"
FORMAT = 2
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
    (a ModelServer, whose ``settings.fmt`` is the format) for ``data`` (the task's TaskData)
    whose per-image ``arrays`` are known; ``evaluation_s`` the task's evaluation time so far (the
    budget's base). None when saliency is off or the sample is empty. Raises EvaluationError
    only for LEASE_EXPIRED (``cancel``)."""
    if not enabled():
        return None
    rows = sample_rows(arrays)
    if not len(rows):
        return None
    started = time.perf_counter()
    budget = BUDGET_FRACTION * max(evaluation_s, 0.0)
    subset = task_subset(slug)
    pred = np.asarray(arrays["pred"], dtype=np.int64)
    entry: dict[str, Any] = {
        "format": FORMAT,
        "side": SIDE,
        "budget_s": round(budget, 3),
        "requested": len(rows),
    }
    fmt = getattr(getattr(server, "settings", None), "fmt", None)
    methods: list[dict[str, Any]] = []
    order: list[str] = []
    skipped: dict[str, str] = {}
    asked: tuple[str, ...] | None = None
    try:
        asked = parse_methods(os.environ.get(METHODS_ENV))
    except ValueError as exc:  # refused at start-up by the CLI; an environment changed since
        entry["error"] = str(exc)[:600]
    else:
        order, skipped = plan(fmt, asked)
        entry["asked"] = "auto" if asked is None else list(asked)
    job = _Job(server, slug, data, rows, pred, subset, started, budget, deadline, cancel)
    try:
        for method in order:
            methods.append(job.run(method, first=not methods))
        if (
            asked is None
            and fmt in LAYER_FORMATS
            and methods
            and all(not m["rows"] and "error" in m for m in methods)
        ):
            methods.append(job.run(FALLBACK, first=False))  # no layer to hook: input gradients
    finally:
        methods += [_skipped(method, why) for method, why in skipped.items()]
        done = np.array(sorted({r for m in methods for r in m["rows"]}), dtype=np.int64)
        entry.update(
            {
                "rows": done.tolist(),
                "index": np.asarray(arrays["index"])[done].tolist(),
                "target": [int(subset[p]) if subset is not None else int(p) for p in pred[done]],
                "failure": (pred[done] != np.asarray(arrays["label"])[done]).tolist(),
                "group_key": next((k for k in GROUP_KEYS if k in arrays), None),
                "methods": methods,
                "seconds": round(time.perf_counter() - started, 3),
            }
        )
    return entry


def _skipped(method: str, why: str) -> dict[str, Any]:
    return {
        "method": method,
        "layer": None,
        "params": {},
        "rows": [],
        "maps": "",
        "seconds": 0.0,
        "skipped": why,
    }


class _Job:
    """One task's saliency requests: the sample, the clock and the budget all methods share."""

    def __init__(
        self,
        server: Any,
        slug: str,
        data: Any,
        rows: np.ndarray,
        pred: np.ndarray,
        subset: Any,
        started: float,
        budget: float,
        deadline: float | None,
        cancel: threading.Event | None,
    ):
        self.server, self.slug, self.parts = server, slug, _rows_by_part(data, rows)
        self.pred, self.subset = pred, subset
        self.started, self.budget, self.deadline, self.cancel = started, budget, deadline, cancel
        self.stopped: str | None = None  # why no further request can be made
        # The images one request holds at least: a model of a fixed batch computes that many
        # (padded) whatever it is sent, so fewer would waste its passes.
        info = getattr(server, "info", None) or {}
        batch_min = info.get("batch_min") if isinstance(info, dict) else None
        self.floor = min(int(batch_min), MAX_ROWS) if type(batch_min) is int and batch_min > 1 else 1
        self.last: tuple[str, float, int, tuple[int, ...]] | None = None  # method, seconds, images, (H, W)

    def _predicted(self, method: str) -> float:
        """Seconds the first request of ``method`` is predicted to take: the last request's,
        scaled by passes per image (occlusion: its windows' forward passes, a third of a pass each)
        and by the images it will hold (a fixed batch: one padded batch either way)."""
        if self.last is None:
            return 0.0
        before, seconds, images, size = self.last
        ratio = passes(method, size) / passes(before, size)
        return seconds * ratio if self.floor > 1 else seconds / images * FIRST_CHUNK * ratio

    def run(self, method: str, *, first: bool) -> dict[str, Any]:
        """One method's part of the entry (module docstring): its maps for as many of the sample's
        images as the budget allows, the first request of ``first`` one always made; a later
        method starts only when its first request is predicted to fit what is left (from the
        seconds per pass the method before it took: runner.saliency_methods.PASSES)."""
        began = time.perf_counter()
        out: dict[str, Any] = {"method": method, "layer": None, "params": {}}
        if self.stopped is not None:
            return _skipped(method, self.stopped)
        left = self.budget - (time.perf_counter() - self.started)
        if not first:
            predicted = self._predicted(method)
            if left <= 0 or predicted > left:
                return _skipped(
                    method,
                    f"the saliency budget was spent by the methods before it ({max(left, 0.0):.2f} s left, "
                    f"its first request predicted to take {predicted:.2f} s)",
                )
        done_rows: list[np.ndarray] = []
        maps: list[np.ndarray] = []
        told: dict[str, Any] = {}
        per_image_s: float | None = None
        try:
            for reader, positions, part_rows in self.parts:
                at = 0
                while at < len(positions):
                    spent = time.perf_counter() - self.started
                    if per_image_s is None:
                        size = max(FIRST_CHUNK, self.floor)
                    else:
                        size = min(
                            max(MAX_CHUNK, self.floor), int((self.budget - spent) / max(per_image_s, 1e-6))
                        )
                    if size < 1:
                        raise _OverBudget
                    size = max(size, self.floor)  # a fixed batch computes this many at the cost of one
                    images = inputs_at(reader, positions[at : at + size])
                    if images is None:
                        out["error"] = "this dataset's images cannot be read by position"
                        self.stopped = out["error"]
                        raise _OverBudget
                    here = part_rows[at : at + len(images)]
                    targets = [
                        int(self.subset[p]) if self.subset is not None else int(p) for p in self.pred[here]
                    ]
                    request = {
                        "method": method,
                        "targets": targets,
                        "fill": training_mean(self.slug),
                        "side": SIDE,
                    }
                    call_started = time.perf_counter()
                    call_deadline = call_started + max(self.budget - spent, 0.0) + GRACE_S
                    if self.deadline is not None:
                        call_deadline = min(call_deadline, self.deadline)
                    got, told = self.server.saliency(
                        images, request, deadline=call_deadline, cancel=self.cancel
                    )
                    per_image_s = (time.perf_counter() - call_started) / len(images)
                    self.last = (method, time.perf_counter() - call_started, len(images), images.shape[2:])
                    maps.append(np.asarray(got, dtype=np.uint8))
                    done_rows.append(here)
                    at += len(images)
        except _OverBudget:
            log.debug("saliency %s: budget spent after %d images", method, sum(len(r) for r in done_rows))
        except EvaluationError as exc:
            if exc.kind == ErrorKind.LEASE_EXPIRED:
                raise
            out["error"] = exc.message[:600]
            if not getattr(self.server, "alive", True):
                self.stopped = f"the model server stopped after {method}'s error"
            log.warning("saliency maps (%s) stopped: %s", method, exc.message[:300])
        done = np.concatenate(done_rows) if done_rows else np.zeros(0, dtype=np.int64)
        stacked = np.concatenate(maps) if maps else np.zeros((0, SIDE, SIDE), dtype=np.uint8)
        if told:
            if _known_method(told.get("saliency_method")) != method:
                out["error"] = (
                    f"the model server answered {printable(str(told.get('saliency_method')))[:40]!r}"
                )
                done, stacked = done[:0], stacked[:0]
            else:
                layer = told.get("saliency_layer")
                out["layer"] = printable(layer, keep_newlines=False)[:200] if isinstance(layer, str) else None
                out["params"] = _json_object(told.get("saliency_params"))
        out.update(
            {
                "rows": done.tolist(),
                "maps": base64.b64encode(np.ascontiguousarray(stacked).tobytes()).decode("ascii"),
                "seconds": round(time.perf_counter() - began, 3),
            }
        )
        return out


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
    """uint8 [m, S, S] of one method of a result's ``saliency`` entry (``entry["methods"][i]``
    with ``side`` given beside it: ``{**method, "side": S}``; or a format-1 entry). Raises
    ValueError when the bytes do not match ``rows`` and ``side``."""
    side, count = int(entry["side"]), len(entry["rows"])
    raw = np.frombuffer(base64.b64decode(entry["maps"]), dtype=np.uint8)
    if raw.size != count * side * side:
        raise ValueError(f"saliency maps hold {raw.size} bytes, not {count}×{side}×{side}")
    return raw.reshape(count, side, side)


def method_maps(entry: Mapping[str, Any]) -> dict[str, tuple[list[int], np.ndarray]]:
    """{method: (rows, uint8 [m, S, S])} of a format-2 entry (the maps of each method that has
    any). Raises ValueError as :func:`decode_maps`."""
    side = int(entry["side"])
    return {
        m["method"]: (list(m["rows"]), decode_maps({**m, "side": side}))
        for m in entry["methods"]
        if m["rows"]
    }


class _OverBudget(Exception):
    """The budget (or the readable images) ran out: keep what is done."""
