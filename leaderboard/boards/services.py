"""Writes for leaderboards: the materialized rows pages read."""
from __future__ import annotations

import logging

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from leaderboard.benchmarks.models import Benchmark, Task
from leaderboard.submissions.models import (
    EvaluationJob,
    Submission,
    result_is_synthetic,
    result_loop_in_sandbox,
)
from leaderboard.submissions.per_image import load_per_image

from . import paired
from .models import BoardEntry
from .selectors import lead_task_top
from .versions import bump

log = logging.getLogger(__name__)


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


def _footprint(result: dict) -> dict[str, float | int | None]:
    """The classifier result's throughput (timing.items_per_s, images/s) and the model server's
    memory (env.memory: peak_bytes, limit_bytes), each None when absent or not a positive number."""
    def positive(value: object) -> float | None:
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else None

    def section(parent: dict, name: str) -> dict:
        value = parent.get(name)
        return value if isinstance(value, dict) else {}

    timing, memory = section(result, "timing"), section(section(result, "env"), "memory")
    peak, limit = positive(memory.get("peak_bytes")), positive(memory.get("limit_bytes"))
    return {"throughput": positive(timing.get("items_per_s")),
            "peak_memory_bytes": int(peak) if peak else None, "memory_limit_bytes": int(limit) if limit else None}


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
            **_footprint(result),
            "submitted_at": submission.created_at,
        },
    )
    benchmark_leaders_refresh(task=task)
    board_ties_refresh(task=task)
    return entry


@receiver(post_save, sender=EvaluationJob)
def _outcomes_stored(sender: type[EvaluationJob], instance: EvaluationJob,
                     update_fields: frozenset[str] | None = None, **kwargs: object) -> None:
    """The runner uploads a result's per-image file after the result, so the row is often on its
    board before the file exists: storing the file (a save naming ``per_image`` in
    ``update_fields``, as the upload does) re-runs the task's tie rule when the job's row is on the
    public board. A signal rather than a call in the upload view, so every path that stores the
    file keeps the board's ties right."""
    if (update_fields and "per_image" in update_fields and instance.per_image
            and BoardEntry.objects.filter(task_id=instance.task_id, submission_id=instance.submission_id,
                                          is_public=True).exists()):
        board_ties_refresh(task=Task.objects.select_related("benchmark").get(pk=instance.task_id))


@receiver(post_delete, sender=BoardEntry)
def _entry_deleted(sender: type[BoardEntry], instance: BoardEntry, **kwargs: object) -> None:
    """A row that took part in the tie rule leaves (a rerun, a deleted submission): the rest of
    its board is grouped again, since a group's members were tested against its leader alone."""
    if instance.tie_rank is not None:
        task = Task.objects.select_related("benchmark").filter(pk=instance.task_id).first()
        if task is not None:
            board_ties_refresh(task=task)


def uses_paired_ties(task: Task) -> bool:
    """Whether a task's ties come from the paired test: classifier tasks ranked by top-1, the
    accuracy whose per-image hits McNemar tests (not mCE, not a training or denoising metric)."""
    return task.benchmark.kind == Benchmark.Kind.CLASSIFIER and task.primary_metric == "top1"


def board_ties_refresh(*, task: Task) -> int:
    """Recompute a task's "statistically tied" marks under the paired tie rule (paired.tie_groups)
    and store them on its rows (``tie_rank``, ``paired``), so pages read them without opening a
    file. Returns the number of rows the rule covered.

    1. The task's public rows, best first, whose succeeded job has per-image outcomes that read
       and hold the same images as the best such row's (paired.align) take part; a row without
       them (or on a task not ranked by top-1, see uses_paired_ties) is left to the interval
       rule pages apply (selectors.mark_ties).
    2. paired.tie_groups groups them; each row stores its shared rank and its test against its
       group's leader (Δ, interval, b, c, p, Holm p̃ and m).
    3. Private rows lose any marks (they are not on the public board the rule ranked). Rows whose
       marks changed are written and the board's version is bumped, so cached pages render
       afresh. A task the rule does not apply to only loses stale marks.
    Cost: one query for the rows, one for the jobs, one file read per public row with outcomes.
    Call it whenever the public rows or their outcomes change (a result, a per-image upload, a
    visibility edit)."""
    if not uses_paired_ties(task):
        if BoardEntry.objects.filter(task=task).exclude(tie_rank=None).update(tie_rank=None, paired={}):
            bump([task.benchmark_id])
        return 0
    entries = list(BoardEntry.objects.filter(task=task, is_public=True)
                   .order_by("-value" if task.higher_is_better else "value", "pk"))
    before = {entry.pk: (entry.tie_rank, entry.paired) for entry in entries}
    members: list[BoardEntry] = []
    rights = []
    sets = None
    if entries:
        jobs = {job.submission_id: job for job in EvaluationJob.objects.filter(
            task=task, state=EvaluationJob.State.SUCCEEDED, submission_id__in=[e.submission_id for e in entries],
        ).exclude(per_image="").exclude(per_image__isnull=True).select_related("task")}
        reference = None
        for entry in entries:
            job = jobs.get(entry.submission_id)
            try:
                arrays = load_per_image(job) if job is not None else None
                if arrays is None:
                    continue
                reference = arrays if reference is None else reference
                pair = paired.align(arrays, reference)
            except (ValueError, OSError) as exc:
                log.warning("board ties of %s: row of submission %s left to the interval rule: %s",
                            task.slug, entry.submission_id, exc)
                continue
            members.append(entry)
            rights.append(pair.right_a)
            sets = pair.sets
    marks = paired.tie_groups(rights, sets=sets) if rights else []
    covered = {entry.pk for entry in members}
    for entry, mark in zip(members, marks, strict=True):
        entry.tie_rank = mark.shared_rank
        entry.paired = {"leader": members[mark.leader].submission_id, "group_size": mark.group_size}
        if mark.test is not None:
            t = mark.test
            entry.paired.update(n=t.n_images, b=t.b, c=t.c, delta=t.delta, ci=list(t.ci), p=t.p,
                                p_holm=mark.p_holm, m=mark.m)
    for entry in entries:
        if entry.pk not in covered:
            entry.tie_rank, entry.paired = None, {}
    changed = [entry for entry in entries if before[entry.pk] != (entry.tie_rank, entry.paired)]
    BoardEntry.objects.bulk_update(changed, ["tie_rank", "paired"])
    cleared = BoardEntry.objects.filter(task=task, is_public=False).exclude(tie_rank=None).update(
        tie_rank=None, paired={})
    if changed or cleared:
        bump([task.benchmark_id])
    return len(members)


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
        board_ties_refresh(task=task)
    bump(BoardEntry.objects.filter(submission=submission).values_list("benchmark_id", flat=True))
