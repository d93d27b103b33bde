"""Reads for leaderboards. Each returns what one page or API response needs in a fixed number of
queries, whatever the number of submissions."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import F, Q, QuerySet, Window
from django.db.models.functions import Rank

from leaderboard.benchmarks.models import Benchmark, Task

from .models import BoardEntry


def _visible(qs: QuerySet, user) -> QuerySet:
    if user is not None and user.is_authenticated:
        if user.is_staff:
            return qs
        return qs.filter(Q(is_public=True) | Q(submission__owner=user))
    return qs.filter(is_public=True)


def _ordering(task: Task) -> F:
    return F("value").desc() if task.higher_is_better else F("value").asc()


@dataclass
class BoardPage:
    task: Task
    rows: list[BoardEntry]
    total: int
    offset: int
    limit: int
    metric_keys: list[str] = field(default_factory=list)
    sort: str = ""
    descending: bool = True

    @property
    def end(self) -> int:
        return self.offset + len(self.rows)


SORTABLE_META = {"submitted_at", "submission_name", "owner_name"}


def board_rows(*, task: Task, user=None, offset: int = 0, limit: int = 50, sort: str = "",
               descending: bool | None = None, baselines: bool | None = None, family: str = "",
               since=None) -> BoardPage:
    """One task's board: rank by the primary metric (equal values share a rank), optionally
    filtered (baselines, model family, submitted since a date) and sorted by another metric or
    column, paginated."""
    qs = _visible(BoardEntry.objects.filter(task=task), user)
    if baselines is not None:
        qs = qs.filter(is_baseline=baselines)
    if family:
        qs = qs.filter(model_family__iexact=family)
    if since is not None:
        qs = qs.filter(submitted_at__date__gte=since)
    ranked = qs.annotate(rank=Window(expression=Rank(), order_by=_ordering(task)))
    if sort and sort != task.primary_metric:
        desc = True if descending is None else descending
        if sort in SORTABLE_META:
            key = F(sort)
        else:
            key = F(f"metrics__{sort}")
        ranked = ranked.order_by(key.desc(nulls_last=True) if desc else key.asc(nulls_last=True), "pk")
    else:
        sort = task.primary_metric
        desc = task.higher_is_better if descending is None else descending
        ranked = ranked.order_by(F("value").desc() if desc else F("value").asc(), "pk")
    total = qs.count()
    rows = list(ranked[offset : offset + limit])
    keys: list[str] = []
    for row in rows:
        for k in row.metrics:
            if k not in keys:
                keys.append(k)
    if task.primary_metric in keys:
        keys.remove(task.primary_metric)
    page = BoardPage(task=task, rows=rows, total=total, offset=offset, limit=limit,
                     metric_keys=keys, sort=sort, descending=desc)
    mark_ties(page)
    return page


def lead_task_top(*, task: Task, limit: int = 3) -> list[dict[str, Any]]:
    """The top public rows of a task as plain dicts (one indexed LIMIT query)."""
    rows = (BoardEntry.objects.filter(task=task, is_public=True).order_by(_ordering(task), "pk")
            .values("submission_id", "submission_name", "value", "is_baseline")[:limit])
    return [{**row, "rank": position} for position, row in enumerate(rows, start=1)]


def benchmarks_with_tasks() -> list[Benchmark]:
    return list(Benchmark.objects.filter(is_active=True).prefetch_related("tasks"))


def board_as_records(page: BoardPage) -> list[dict[str, Any]]:
    """Rows as plain dicts for the API and exports."""
    return [
        {
            "rank": row.rank,
            "tied_with_above": getattr(row, "tied", False),
            "submission_id": row.submission_id,
            "name": row.submission_name,
            "owner": row.owner_name,
            "is_baseline": row.is_baseline,
            "model_family": row.model_family,
            "synthetic_data": row.is_synthetic_data,
            "loop_in_sandbox": row.loop_in_sandbox,
            "task": page.task.slug,
            "primary_metric": page.task.primary_metric,
            "value": row.value,
            "ci95": [row.ci_low, row.ci_high] if row.ci_low is not None else None,
            "metrics": row.metrics,
            "submitted_at": row.submitted_at.isoformat(),
        }
        for row in page.rows
    ]


def mark_ties(page: BoardPage) -> None:
    """Flag rows whose 95% interval overlaps the interval of the row ranked just above: their order
    is not established by the evidence, and the table says so."""
    rows = sorted(page.rows, key=lambda r: (r.rank, r.pk))
    previous = None
    for row in rows:
        row.tied = False
        if previous is not None and None not in (row.ci_low, row.ci_high, previous.ci_low, previous.ci_high):
            row.tied = row.ci_low <= previous.ci_high and previous.ci_low <= row.ci_high
        previous = row


def board_curves(*, task: Task, submission_ids: list[int]) -> dict[int, dict]:
    """The curves of these submissions' results on one task, in one query."""
    from leaderboard.submissions.models import EvaluationJob

    jobs = EvaluationJob.objects.filter(task=task, submission_id__in=submission_ids,
                                        state=EvaluationJob.State.SUCCEEDED).values_list("submission_id", "result")
    return {sub_id: (result or {}).get("curves", {}) for sub_id, result in jobs}


def values_across_tasks(*, tasks: list[Task], submission_ids: list[int], user=None) -> dict[int, dict[int, float]]:
    """{submission id: {task id: primary metric}} of these submissions on these tasks, as far as
    ``user`` may see them (as on the board), in one query."""
    values: dict[int, dict[int, float]] = {}
    rows = _visible(BoardEntry.objects.filter(task__in=tasks, submission_id__in=submission_ids), user)
    for sub_id, task_id, value in rows.values_list("submission_id", "task_id", "value"):
        values.setdefault(sub_id, {})[task_id] = value
    return values


def submission_rank(*, submission_id: int, task: Task) -> tuple[int, int] | None:
    """(rank, board size) of a public submission on a task's board, or None."""
    entry = BoardEntry.objects.filter(task=task, submission_id=submission_id).first()
    if entry is None:
        return None
    board = BoardEntry.objects.filter(task=task, is_public=True)
    better = board.filter(value__gt=entry.value) if task.higher_is_better else board.filter(value__lt=entry.value)
    return better.count() + 1, board.count()


def paired_points(*, x_task: Task, y_task: Task, y_metric: str | None = None, limit: int = 500) -> list[dict]:
    """For submissions on both boards: x = primary metric on ``x_task``, y = ``y_metric`` (default
    the primary) on ``y_task``. Two queries; at most ``limit`` points (the best on y)."""
    y_metric = y_metric or y_task.primary_metric
    ys = {e.submission_id: e for e in BoardEntry.objects.filter(task=y_task, is_public=True)
          .order_by(_ordering(y_task))[:limit]}
    xs = dict(BoardEntry.objects.filter(task=x_task, is_public=True, submission_id__in=list(ys))
              .values_list("submission_id", "value"))
    points = []
    for sub_id, entry in ys.items():
        y = entry.value if y_metric == y_task.primary_metric else entry.metrics.get(y_metric)
        if sub_id in xs and y is not None:
            points.append({"submission_id": sub_id, "name": entry.submission_name, "x": xs[sub_id], "y": y,
                           "is_baseline": entry.is_baseline})
    return points


def size_points(*, task: Task, limit: int = 500) -> list[dict]:
    """Primary metric against the model's parameter count, where the runner recorded it."""
    rows = (BoardEntry.objects.filter(task=task, is_public=True, parameters__isnull=False)
            .order_by(_ordering(task)).values("submission_id", "submission_name", "value", "parameters",
                                              "is_baseline")[:limit])
    return [{"submission_id": r["submission_id"], "name": r["submission_name"], "x": r["parameters"] / 1e6,
             "y": r["value"], "is_baseline": r["is_baseline"]} for r in rows]


PROFILE_TAU_MAX = 4.0


def optimizer_profiles(*, tau_max: float = PROFILE_TAU_MAX) -> dict[str, Any]:
    """AlgoPerf-style performance profiles over time-to-target on the optimizer training tasks.

    1. For each training task, the fastest public run's seconds_to_target_mean is the reference.
    2. An optimizer's ratio on a task is its time over that reference; a run that never reached the
       target, or took more than ``tau_max`` times the fastest, counts as not reaching it.
    3. Its profile ρ(τ) is the fraction of tasks with ratio ≤ τ; its score is the normalized area
       under ρ on [1, τ_max] (1 = fastest everywhere).
    An optimizer is identified across benchmarks by its owner and name (baselines share names).
    ``flags``: per optimizer's label, whether any of its rows was scored on synthetic data or had
    its loop run in the sandbox (the labels its board rows carry).
    """
    tasks = list(Task.objects.filter(benchmark__kind="optimizer").exclude(slug__startswith="opt-f")
                 .select_related("benchmark"))
    entries = list(BoardEntry.objects.filter(task__in=tasks, is_public=True)
                   .values("task_id", "submission_name", "owner_name", "metrics", "is_baseline",
                           "is_synthetic_data", "loop_in_sandbox"))
    times: dict[int, dict[tuple[str, str], float]] = {t.pk: {} for t in tasks}
    optimizers: dict[tuple[str, str], bool] = {}
    labelled: dict[tuple[str, str], dict[str, bool]] = {}
    for e in entries:
        key = (e["owner_name"], e["submission_name"])
        optimizers[key] = e["is_baseline"]
        flags = labelled.setdefault(key, {"synthetic_data": False, "loop_in_sandbox": False})
        flags["synthetic_data"] |= e["is_synthetic_data"]
        flags["loop_in_sandbox"] |= e["loop_in_sandbox"]
        seconds = e["metrics"].get("seconds_to_target_mean")
        if isinstance(seconds, int | float) and seconds > 0:
            times[e["task_id"]][key] = float(seconds)
    scored_tasks = [t for t in tasks if times[t.pk]]
    ratios: dict[tuple[str, str], list[float]] = {k: [] for k in optimizers}
    for task in scored_tasks:
        best = min(times[task.pk].values())
        for key in optimizers:
            t = times[task.pk].get(key)
            r = t / best if t is not None else float("inf")
            ratios[key].append(r if r <= tau_max else float("inf"))
    profiles, scores, flags_by_label = {}, {}, {}
    n = len(scored_tasks)
    for key, rs in ratios.items():
        if not n:
            break
        finite = sorted(r for r in rs if r != float("inf"))
        steps = [(1.0, sum(1 for r in finite if r <= 1.0) / n)]
        for r in finite:
            steps.append((r, sum(1 for q in finite if q <= r) / n))
        steps.append((tau_max, len(finite) / n))
        label = key[1] + ("" if optimizers[key] else f" ({key[0]})")
        profiles[label] = steps
        flags_by_label[label] = labelled[key]
        # Area under the step function on [1, tau_max], normalized to 1.
        area, previous_tau, previous_rho = 0.0, 1.0, steps[0][1]
        for tau, rho in steps[1:]:
            area += (tau - previous_tau) * previous_rho
            previous_tau, previous_rho = tau, rho
        scores[label] = area / (tau_max - 1.0)
    ranking = sorted(scores.items(), key=lambda kv: -kv[1])
    return {"tasks": [t.slug for t in scored_tasks], "profiles": profiles, "scores": ranking, "tau_max": tau_max,
            "flags": flags_by_label}
