"""Reads for leaderboards. Each returns what one page or API response needs in a fixed number of
queries, whatever the number of submissions."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, F, Q, QuerySet, Window
from django.db.models.functions import Rank

from leaderboard.benchmarks.models import Benchmark, Task

from . import algoperf
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
    tie_rules: set[str] = field(default_factory=set)  # the rules that marked some row (mark_ties)

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
    mark_ties(page, board=qs)
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
            "tie_rule": getattr(row, "tie_rule", ""),
            "shared_rank": getattr(row, "shared_rank", None),
            "paired": row.paired or None,
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


def mark_ties(page: BoardPage, board: QuerySet | None = None) -> None:
    """Say which rows' order the evidence does not establish, and by which rule
    (``row.tie_rule``): "paired" or "interval", else "".

    - Rows the paired rule covered (``tie_rank`` set by services.board_ties_refresh) whose group
      has two or more rows on ``board`` (the rows this view ranks) share a rank, shown "=r":
      r is the current rank of the group's best row on the board (``row.shared_rank``); rows of a
      group alone here are simply ranked.
    - Other rows keep the interval rule: a row whose 95% interval overlaps the interval of the
      row ranked just above (``row.tied``, shown "≈"), unless both rows are paired-covered,
      since the paired test has then spoken.
    Two queries when some page row's group has another member, none otherwise."""
    rows = sorted(page.rows, key=lambda r: (r.rank, r.pk))
    groups = {row.tie_rank for row in rows if row.tie_rank is not None and row.paired.get("group_size", 1) > 1}
    members: dict[int, list[float]] = {}
    shared: dict[int, int] = {}
    if groups and board is not None:
        for group, value in board.filter(tie_rank__in=groups).values_list("tie_rank", "value"):
            members.setdefault(group, []).append(value)
        best = {g: (max(v) if page.task.higher_is_better else min(v)) for g, v in members.items()}
        better = {f"g{g}": Count("pk", filter=Q(value__gt=v) if page.task.higher_is_better else Q(value__lt=v))
                  for g, v in best.items()}
        shared = {int(k[1:]): n + 1 for k, n in board.aggregate(**better).items()}
    previous = None
    for row in rows:
        row.tied, row.tie_rule, row.shared_rank = False, "", None
        if row.tie_rank in shared and len(members[row.tie_rank]) > 1:
            row.tie_rule, row.shared_rank = "paired", shared[row.tie_rank]
        elif (previous is not None and None not in (row.ci_low, row.ci_high, previous.ci_low, previous.ci_high)
              and (row.tie_rank is None or previous.tie_rank is None)):
            row.tied = row.ci_low <= previous.ci_high and previous.ci_low <= row.ci_high
            row.tie_rule = "interval" if row.tied else ""
        previous = row
    page.tie_rules = {row.tie_rule for row in rows if row.tie_rule}


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


REFERENCE_FAMILY = "reference optimizer"  # the model_family baselines.json gives the reference optimizers


def is_training_workload(benchmark_kind: str, task_slug: str) -> bool:
    """Whether a task trains a model on an optimizer board (every optimizer task but the synthetic
    functions opt-f*): the workloads scored by time to target."""
    return benchmark_kind == "optimizer" and not task_slug.startswith("opt-f")


def is_training_task(task: Task) -> bool:
    """is_training_workload for a Task (reads its benchmark)."""
    return is_training_workload(task.benchmark.kind, task.slug)


def training_tasks() -> list[Task]:
    """Every optimizer training workload the site has loaded from the catalogue, in board order."""
    return list(Task.objects.filter(benchmark__kind="optimizer").exclude(slug__startswith="opt-f")
                .select_related("benchmark"))


def _curves(*, task_ids: list[int], submission_ids: list[int]) -> dict[tuple[int, int], dict]:
    """{(task id, submission id): the result's curves} of succeeded jobs, in one query reading
    only the curves out of each result document."""
    from leaderboard.submissions.models import EvaluationJob

    jobs = EvaluationJob.objects.filter(task_id__in=task_ids, submission_id__in=submission_ids,
                                        state=EvaluationJob.State.SUCCEEDED)
    return {(task_id, sub_id): curves or {} for task_id, sub_id, curves
            in jobs.values_list("task_id", "submission_id", "result__curves")}


def workload_targets(*, tasks: list[Task]) -> dict[int, algoperf.Target | None]:
    """{task id: its target} from the public reference-optimizer rows (baselines of the family
    ``REFERENCE_FAMILY``) of each task: algoperf.workload_target on the curve of the task's
    primary metric (algoperf.validation_key). Two queries for any number of tasks."""
    refs = list(BoardEntry.objects.filter(task__in=tasks, is_public=True, is_baseline=True,
                                          model_family=REFERENCE_FAMILY)
                .values_list("task_id", "submission_id", "submission_name"))
    curves = _curves(task_ids=[t.pk for t in tasks], submission_ids=[r[1] for r in refs])
    targets: dict[int, algoperf.Target | None] = {}
    for task in tasks:
        named = {name: curves.get((task_id, sub_id), {}) for task_id, sub_id, name in refs if task_id == task.pk}
        targets[task.pk] = algoperf.workload_target(named, key=algoperf.validation_key(task.primary_metric),
                                                    higher_is_better=task.higher_is_better)
    return targets


@dataclass
class BoardTimes:
    """A training board's time to target: the workload's ``target`` (None until a reference
    optimizer has a result) and, per submission id, its median over seeds in each clock
    (``seconds``: training seconds, ``samples``: training examples; ∞ never reached, None unknown)."""

    target: algoperf.Target | None
    times: dict[int, dict[str, float | None]]


def board_time_to_target(*, task: Task, submission_ids: list[int]) -> BoardTimes:
    """Time to the workload's reference target for these submissions on one training task
    (algoperf.time_to_target), in three queries."""
    target = workload_targets(tasks=[task])[task.pk]
    times: dict[int, dict[str, float | None]] = {}
    if target is not None:
        curves = _curves(task_ids=[task.pk], submission_ids=submission_ids)
        times = {sub_id: {clock: algoperf.time_to_target(curves.get((task.pk, sub_id)), target, clock)
                          for clock in algoperf.CLOCKS} for sub_id in submission_ids}
    return BoardTimes(target, times)


def optimizer_profiles(*, cap: float = algoperf.CAP) -> dict[str, Any]:
    """AlgoPerf scoring of every public optimizer across the optimizer training workloads
    (leaderboard/boards/algoperf.py has the formulas and their source).

    1. Each workload's target comes from its reference optimizers (workload_targets).
    2. Each optimizer's time on a workload is the median over its seeds of the time to that
       target, in training seconds and in training examples (samples); ∞ when not reached or
       absent.
    3. Per clock: ratios to the fastest (∞ past ``cap``), profiles ρ(τ) with n = every training
       workload loaded (not only those with results), scores B exact and by the trapezoid rule.
    An optimizer is identified across benchmarks by its owner and name (baselines share names).
    Returns {"tasks": slugs (n of them), "n", "tau_max", "targets": {slug: Target or None},
    "clocks": {clock: {"profiles": {label: [(τ, ρ)]}, "scores": [(label, exact, trapz)] best
    first, "ratios": {label: [r per task]}}}, "profiles" and "scores" (the seconds clock's:
    (label, exact)), "flags": per label, whether any of its rows was scored on synthetic data or
    had its loop in the sandbox}. Four queries.
    """
    tasks = training_tasks()
    targets = workload_targets(tasks=tasks)
    entries = list(BoardEntry.objects.filter(task__in=tasks, is_public=True)
                   .values("task_id", "submission_id", "submission_name", "owner_name", "is_baseline",
                           "is_synthetic_data", "loop_in_sandbox"))
    curves = _curves(task_ids=[t.pk for t in tasks], submission_ids=list({e["submission_id"] for e in entries}))
    times: dict[str, dict[str, dict[int, float | None]]] = {clock: {} for clock in algoperf.CLOCKS}
    flags: dict[str, dict[str, bool]] = {}
    for e in entries:
        label = e["submission_name"] + ("" if e["is_baseline"] else f" ({e['owner_name']})")
        labelled = flags.setdefault(label, {"synthetic_data": False, "loop_in_sandbox": False})
        labelled["synthetic_data"] |= e["is_synthetic_data"]
        labelled["loop_in_sandbox"] |= e["loop_in_sandbox"]
        target = targets[e["task_id"]]
        for clock in algoperf.CLOCKS:
            t = None if target is None else algoperf.time_to_target(
                curves.get((e["task_id"], e["submission_id"])), target, clock)
            times[clock].setdefault(label, {})[e["task_id"]] = t
    n = len(tasks)
    clocks: dict[str, dict[str, Any]] = {}
    for clock, per in times.items():
        ratios = algoperf.performance_ratios(per, [t.pk for t in tasks], cap) if n else {}
        scored = [(label, algoperf.score_exact(rs, n, cap), algoperf.score_trapz(rs, n, cap))
                  for label, rs in ratios.items()]
        clocks[clock] = {"profiles": {label: algoperf.profile_steps(rs, n, cap) for label, rs in ratios.items()},
                         "scores": sorted(scored, key=lambda s: (-s[1], s[0])), "ratios": ratios}
    return {"tasks": [t.slug for t in tasks], "n": n, "tau_max": cap,
            "targets": {t.slug: targets[t.pk] for t in tasks}, "clocks": clocks,
            "profiles": clocks["seconds"]["profiles"],
            "scores": [(label, exact) for label, exact, _ in clocks["seconds"]["scores"]], "flags": flags}
