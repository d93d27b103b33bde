"""The weighted ranking of a classifier benchmark (``/b/<slug>/weighted/``): the metrics its
public results hold, turned into points of performance by Dynascore (dynascore.py), ranked under
the reader's weights. The page's script re-sums the same points when a slider moves; the server
renders the ranking a URL's weights ask for, so a shared link needs no script.

Metrics offered (docs/scoring.md "Weighted rankings"), each only when every ranked row has it:

- ``performance``: the lead task's primary metric (top-1, %), utility ``m``;
- ``<task>:mce``: a task ranked by mCE (%), utility ``100 − m``;
- ``<task>:worst_region_top1`` (%), utility ``m``; ``<task>:disparity`` (points), ``100 − m``;
- ``throughput``: images per second on the lead task, utility ``m``;
- ``parameters``: millions, utility ``−m``;
- ``memory``: the model server's peak memory in GiB, utility ``L − m`` with ``L`` the largest
  memory any ranked row's server could use (the instance's memory of PROTOCOLS; one constant, so
  rows evaluated on larger nodes gain nothing from it).

The offsets move every row's score by the same amount and never change the order.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from leaderboard.benchmarks.models import Benchmark
from runner.spec import finite_float

from . import dynascore
from .models import BoardEntry, ReportedResult

GIB = 1024 ** 3


class BadWeights(ValueError):
    """A weight in the query string is not a number from 0 to 5; the message names the parameter."""


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    help: str


@dataclass
class Row:
    name: str
    owner: str
    submission_id: int | None  # None for a reported row
    reported: ReportedResult | None
    values: dict[str, float] = field(default_factory=dict)  # the metrics as measured (their units)
    utilities: dict[str, float] = field(default_factory=dict)
    points: dict[str, float] = field(default_factory=dict)
    score: float | None = None
    rank: int = 0
    is_synthetic_data: bool = False

    @property
    def performance(self) -> float:
        return self.values[dynascore.PERFORMANCE]


@dataclass
class WeightedBoard:
    metrics: list[Metric]  # the kept metrics, performance first
    dropped: list[tuple[str, str]]  # (label, why) for each metric left out
    weights: dict[str, float]
    defaults: dict[str, int]
    rows: list[Row]  # ranked: best Dynascore first
    reported: list[dict[str, Any]]  # the reported claims, with the verified row of the same name
    include_reported: bool
    amrs: dict[str, float]

    def data(self) -> dict[str, Any]:
        """What the page's script needs: the kept metrics' keys, the defaults and each row's points."""
        return {"metrics": [m.key for m in self.metrics], "defaults": self.defaults,
                "rows": [{"id": _row_id(r), "points": r.points, "performance": r.performance, "name": r.name}
                         for r in self.rows]}


def _row_id(row: Row) -> str:
    return f"s{row.submission_id}" if row.reported is None else f"r{row.reported.pk}"


def _task_metrics(task_slug: str, title: str, entry_metrics: Mapping[str, Any], primary: str) -> list[tuple[
        Metric, float, float, str]]:
    """(metric, direction, offset, source key) of a non-lead task's robustness metrics."""
    found = []
    if primary == "mce" or "mce" in entry_metrics:
        found.append((Metric(f"{task_slug}:mce", f"mCE · {title}", "%",
                             "mean corruption error, lower is better (utility 100 − mCE)"), -1.0, 100.0, "mce"))
    if "worst_region_top1" in entry_metrics:
        found.append((Metric(f"{task_slug}:worst_region_top1", f"worst-region top-1 · {title}", "%",
                             "top-1 of the region the model does worst on"), 1.0, 0.0, "worst_region_top1"))
    if "disparity" in entry_metrics:
        found.append((Metric(f"{task_slug}:disparity", f"disparity · {title}", "points",
                             "best − worst region top-1, lower is better (utility 100 − disparity)"),
                      -1.0, 100.0, "disparity"))
    return found


WEIGHT_TEXT = re.compile(r"[0-9]{1,3}(\.[0-9]{0,6})?|\.[0-9]{1,6}", re.ASCII)
UNKNOWN_WEIGHTS_SHOWN = 5


def parse_weights(query: Mapping[str, str], keys: list[str]) -> dict[str, float]:
    """The weights ``w_<metric>=<0..5>`` a URL carries for ``keys``; a metric without one takes
    its default (performance 4, others 1). Raises BadWeights naming the parameter."""
    weights: dict[str, float] = dict(dynascore.default_weights(keys))
    for key in keys:
        raw = query.get(f"w_{key}")
        if raw is None or raw == "":
            continue
        # plain decimals only: float() also takes "1_0", " 3 ", "1e0" and fullwidth digits
        value = float(raw) if WEIGHT_TEXT.fullmatch(raw) else math.nan
        if not (dynascore.WEIGHT_MIN <= value <= dynascore.WEIGHT_MAX):
            raise BadWeights(f"w_{key} must be a number from {dynascore.WEIGHT_MIN} to {dynascore.WEIGHT_MAX}, "
                             f"not {raw[:40]!r}")
        weights[key] = value
    return weights


def weighted_board(bench: Benchmark, query: Mapping[str, str], *, include_reported: bool) -> WeightedBoard:
    """The ranking of ``bench``'s public results (its lead task's rows, with their other tasks'
    robustness metrics) under the weights in ``query``; reported claims join the ranking only
    with ``include_reported``. Raises BadWeights for a bad weight, ValueError for a benchmark
    that is not a classifier's or has no tasks."""
    if bench.kind != Benchmark.Kind.CLASSIFIER:
        raise ValueError("weighted rankings are offered on classifier benchmarks")
    tasks = list(bench.tasks.all())
    if not tasks:
        raise ValueError("this benchmark has no tasks")
    lead = tasks[0]
    entries = list(BoardEntry.objects.filter(benchmark=bench, is_public=True).only(
        "task_id", "submission_id", "value", "metrics", "submission_name", "owner_name", "parameters",
        "throughput", "peak_memory_bytes", "memory_limit_bytes", "is_synthetic_data"))
    by_task: dict[int, dict[int, BoardEntry]] = {}
    for e in entries:
        by_task.setdefault(e.task_id, {})[e.submission_id] = e
    rows = [Row(name=e.submission_name, owner=e.owner_name, submission_id=e.submission_id, reported=None,
                is_synthetic_data=e.is_synthetic_data, values={dynascore.PERFORMANCE: e.value})
            for e in by_task.get(lead.pk, {}).values()]
    candidates: list[Metric] = [Metric(dynascore.PERFORMANCE, f"{lead.primary_metric} · {lead.title}", "%",
                                       "the lead task's primary metric")]
    directions: dict[str, tuple[float, float]] = {dynascore.PERFORMANCE: (1.0, 0.0)}

    for task in tasks[1:]:
        task_rows = by_task.get(task.pk, {})
        sample = next(iter(task_rows.values()), None)
        if sample is None:
            continue
        for metric, direction, offset, source in _task_metrics(task.slug, task.title, sample.metrics,
                                                               task.primary_metric):
            candidates.append(metric)
            directions[metric.key] = (direction, offset)
            for row in rows:
                e = task_rows.get(row.submission_id or -1)
                value = (e.value if source == task.primary_metric else e.metrics.get(source)) if e else None
                if (number := finite_float(value)) is not None:
                    row.values[metric.key] = number

    lead_rows = by_task.get(lead.pk, {})
    limits = [e.memory_limit_bytes for e in lead_rows.values() if e.memory_limit_bytes]
    memory_offset = max(limits) / GIB if limits else 0.0
    for metric, direction, offset in (
            (Metric("throughput", "throughput", "images/s", "images per second over the lead task's evaluation"),
             1.0, 0.0),
            (Metric("parameters", "parameters", "millions", "model parameters, fewer is better (utility −m)"),
             -1.0, 0.0),
            (Metric("memory", "peak memory", "GiB",
                    f"the model server's peak memory, less is better (utility {memory_offset:.3g} GiB − m: the "
                    "largest memory a ranked row's server could use)"), -1.0, memory_offset)):
        candidates.append(metric)
        directions[metric.key] = (direction, offset)
        for row in rows:
            e = lead_rows[row.submission_id or -1]
            raw = {"throughput": e.throughput, "parameters": e.parameters and e.parameters / 1e6,
                   "memory": e.peak_memory_bytes and e.peak_memory_bytes / GIB}[metric.key]
            if raw:
                row.values[metric.key] = float(raw)

    claims = list(ReportedResult.objects.filter(task=lead).order_by("-value", "model_name"))
    verified_by_name = {r.name.lower(): r for r in rows}
    reported = [{"claim": c, "verified": verified_by_name.get(c.model_name.lower())} for c in claims]
    for item in reported:
        verified = item["verified"]
        item["difference"] = verified.performance - item["claim"].value if verified else None
    if include_reported:
        rows += [Row(name=c.model_name, owner="reported", submission_id=None, reported=c,
                     values={dynascore.PERFORMANCE: c.value}) for c in claims]

    kept: list[Metric] = []
    dropped: list[tuple[str, str]] = []
    for metric in candidates:
        have = sum(1 for r in rows if metric.key in r.values)
        if metric.key != dynascore.PERFORMANCE and have < len(rows):
            if have:
                dropped.append((metric.label, f"recorded for {have} of {len(rows)} results"))
            continue
        kept.append(metric)
    for row in rows:
        for metric in kept:
            direction, offset = directions[metric.key]
            row.utilities[metric.key] = direction * row.values[metric.key] + offset
    others = {m.key: [r.utilities[m.key] for r in rows] for m in kept if m.key != dynascore.PERFORMANCE}
    normalized = dynascore.normalize([r.performance for r in rows], others)
    labels = {m.key: m.label for m in kept}
    if rows:  # an empty board has nothing to say about its metrics
        dropped += [(labels[k], why) for k, why in normalized.dropped.items()]
    kept = [m for m in kept if m.key in normalized.points]
    for i, row in enumerate(rows):
        row.points = {m.key: normalized.points[m.key][i] for m in kept}

    keys = [m.key for m in kept]
    weights = parse_weights(query, keys)
    known = {m.key for m in candidates}  # a dropped metric's weight is already explained above
    unknown = sorted(k for k in query if k.startswith("w_") and k[2:] not in known)
    dropped += [(k[:40], f"this ranking has no such metric (its weights: {', '.join('w_' + m for m in keys)})")
                for k in unknown[:UNKNOWN_WEIGHTS_SHOWN]]  # a typo in a hand-edited address says so
    scores = dynascore.weighted(normalized, weights)
    for i, row in enumerate(rows):
        row.score = scores[i] if scores is not None else None
    rows.sort(key=lambda r: (-(r.score if r.score is not None else 0.0), -r.performance, r.name))
    for i, row in enumerate(rows, start=1):
        row.rank = i
    return WeightedBoard(metrics=kept, dropped=dropped, weights=weights, defaults=dynascore.default_weights(keys),
                         rows=rows, reported=reported, include_reported=include_reported, amrs=normalized.amrs)
