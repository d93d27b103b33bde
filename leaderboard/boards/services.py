"""Writes for leaderboards: the materialized rows pages read."""
from __future__ import annotations

from leaderboard.benchmarks.models import Benchmark, Task
from leaderboard.submissions.models import (
    EvaluationJob,
    Submission,
    result_is_synthetic,
    result_loop_in_sandbox,
)

from .cache import bump
from .models import BoardEntry
from .selectors import lead_task_top


def benchmark_leaders_refresh(*, task: Task) -> None:
    """Re-materialize the home page's leaders when a row of a benchmark's lead task changed."""
    lead = Task.objects.filter(benchmark_id=task.benchmark_id).order_by("position", "slug").values_list(
        "pk", flat=True).first()
    if lead == task.pk:
        Benchmark.objects.filter(pk=task.benchmark_id).update(leaders=lead_task_top(task=task))


def _parameters(result: dict) -> int | None:
    env = result.get("env", {}) if isinstance(result, dict) else {}
    value = env.get("parameters", env.get("n_parameters"))
    return int(value) if isinstance(value, int | float) and value > 0 else None


def board_entry_upsert(*, job: EvaluationJob, submission: Submission) -> BoardEntry | None:
    """Write (or refresh) the row a succeeded job puts on its task's board."""
    result = job.result or {}
    metrics = result.get("metrics", {})
    task = job.task
    if task.primary_metric not in metrics:
        return None
    ci = result.get("ci95", {}).get(task.primary_metric) or [None, None]
    entry, _ = BoardEntry.objects.update_or_create(
        task=task,
        submission=submission,
        defaults={
            "benchmark_id": task.benchmark_id,
            "value": float(metrics[task.primary_metric]),
            "ci_low": ci[0],
            "ci_high": ci[1],
            "metrics": metrics,
            "ci95": result.get("ci95", {}),
            "submission_name": submission.name,
            "owner_name": submission.owner.get_username(),
            "model_family": submission.model_family,
            "is_baseline": submission.is_baseline,
            "is_public": submission.visibility == Submission.Visibility.PUBLIC,
            "is_synthetic_data": result_is_synthetic(result),
            "loop_in_sandbox": result_loop_in_sandbox(result),
            "parameters": _parameters(result),
            "submitted_at": submission.created_at,
        },
    )
    benchmark_leaders_refresh(task=task)
    return entry


def board_entries_refresh_submission(*, submission: Submission) -> None:
    """Carry a submission's name, visibility or baseline flag into its rows after an edit."""
    BoardEntry.objects.filter(submission=submission).update(
        submission_name=submission.name,
        is_public=submission.visibility == Submission.Visibility.PUBLIC,
        is_baseline=submission.is_baseline,
        model_family=submission.model_family,
    )
    for task in Task.objects.filter(board_entries__submission=submission).select_related("benchmark"):
        benchmark_leaders_refresh(task=task)
    bump(BoardEntry.objects.filter(submission=submission).values_list("benchmark_id", flat=True))
