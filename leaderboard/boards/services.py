"""Writes for leaderboards: the materialized rows pages read."""
from __future__ import annotations

import logging
import threading
from collections import Counter

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from leaderboard.benchmarks.models import Benchmark, Task
from leaderboard.celery import app
from leaderboard.submissions.models import (
    EvaluationJob,
    OutcomeVectors,
    Submission,
    result_is_synthetic,
    result_loop_in_sandbox,
)
from leaderboard.submissions.per_image import outcome_vectors, right, same_images, set_codes

from . import paired
from .models import BoardEntry
from .selectors import lead_task_top
from .versions import bump

log = logging.getLogger(__name__)
_pending_ties = threading.local()


def benchmark_leaders_refresh(*, task: Task) -> None:
    """Re-materialize the home page's leaders when a row of a benchmark's lead task changed."""
    lead = Task.objects.filter(benchmark_id=task.benchmark_id).order_by("position", "slug").values_list(
        "pk", flat=True).first()
    if lead == task.pk:
        Benchmark.objects.filter(pk=task.benchmark_id).update(leaders=lead_task_top(task=task))


@receiver(post_delete, sender=BoardEntry)
def _leader_deleted(sender: type[BoardEntry], instance: BoardEntry, **kwargs: object) -> None:
    """A row that leaves its board (a rerun, a deleted submission) leaves the home page's leaders
    too, which only a row's upsert or edit refreshed: one query per deleted row, a refresh only
    when it was listed."""
    listed = Benchmark.objects.filter(pk=instance.benchmark_id,
                                      leaders__contains=[{"submission_id": instance.submission_id}])
    if listed.exists():
        task = Task.objects.filter(pk=instance.task_id).first()
        if task is not None:
            benchmark_leaders_refresh(task=task)


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
    """Write (or refresh) the row a succeeded job puts on its task's board; once it commits, the
    site worker recomputes the task's paired ties (board_ties_refresh_later)."""
    result = job.result or {}
    metrics = result.get("metrics", {})
    task = job.task
    if task.primary_metric not in metrics:
        return None
    ci = result.get("ci95", {}).get(task.primary_metric) or [None, None]
    # One transaction even when the caller has none: the refresh is sent after the row commits.
    with transaction.atomic():
        # before the row's save: its bump's warm is then sent after the ties, and a site worker that
        # takes them in order renders the board once, with the new ties
        board_ties_refresh_later(task=task)
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
    return entry


@receiver(post_save, sender=EvaluationJob)
def _outcomes_stored(sender: type[EvaluationJob], instance: EvaluationJob,
                     update_fields: frozenset[str] | None = None, **kwargs: object) -> None:
    """The runner uploads a result's per-image file after the result, so the row is often on its
    board before the file exists: storing the file (a save naming ``per_image`` in
    ``update_fields``, as the upload does) drops the compact vectors of any earlier file and asks
    the site worker to refresh the task's ties (which compacts the new file once). A signal
    rather than a call in the upload view, so every path that stores the file keeps the board's
    ties right."""
    if update_fields and "per_image" in update_fields:
        OutcomeVectors.objects.filter(job_id=instance.pk).exclude(source=instance.per_image.name or "").delete()
        if instance.per_image:
            board_ties_refresh_later(task=Task.objects.select_related("benchmark").get(pk=instance.task_id))


@receiver(post_delete, sender=BoardEntry)
def _entry_deleted(sender: type[BoardEntry], instance: BoardEntry, **kwargs: object) -> None:
    """A row that took part in the tie rule leaves (a rerun, a deleted submission): the rest of
    its board is grouped again, since a group's members were tested against its leader alone."""
    if instance.tie_rank is not None:
        task = Task.objects.select_related("benchmark").filter(pk=instance.task_id).first()
        if task is not None:
            board_ties_refresh_later(task=task)


def uses_paired_ties(task: Task) -> bool:
    """Whether a task's ties come from the paired test: classifier tasks ranked by top-1, the
    accuracy whose per-image hits McNemar tests (not mCE, not a training or denoising metric)."""
    return task.benchmark.kind == Benchmark.Kind.CLASSIFIER and task.primary_metric == "top1"


def board_ties_refresh_later(*, task: Task) -> None:
    """Have the site worker recompute ``task``'s paired ties (board_ties_refresh) once the current
    transaction commits: the transaction that saves a result or stores a file opens no per-image
    file and waits for no tie rule. One message per commit, however many tasks it touched (the
    first on_commit callback takes them all). A task the paired rule does not apply to only loses
    stale marks, here and now (one query, no file). Sending never fails the commit: with the
    broker down the ties wait for the next change of the task or ``manage.py refresh_ties``."""
    if not uses_paired_ties(task):
        if BoardEntry.objects.filter(task=task).exclude(tie_rank=None).update(tie_rank=None, paired={}):
            bump([task.benchmark_id])
        return
    _pending_ties.__dict__.setdefault("ids", set()).add(task.pk)
    transaction.on_commit(_send_ties_refresh)


def _send_ties_refresh() -> None:
    ids = sorted(_pending_ties.__dict__.pop("ids", set()))
    if not ids:
        return
    try:
        # By name: boards/tasks.py (imported by BoardsConfig.ready) calls board_ties_refresh.
        app.tasks["leaderboard.refresh_ties"].delay(ids)
    except Exception:  # noqa: BLE001 - a broker down (or, run inline, the refresh failing) never fails the commit
        log.warning("ties of tasks %s not refreshed; `manage.py refresh_ties` recomputes them", ids, exc_info=True)


def board_ties_refresh(*, task: Task) -> int:
    """Recompute a task's "statistically tied" marks under the paired tie rule (paired.tie_groups)
    and store them on its rows (``tie_rank``, ``paired``), so pages read them without opening a
    file. Returns the number of rows the rule covered. Runs on the site worker
    (tasks.refresh_ties, sent by board_ties_refresh_later) or from ``manage.py refresh_ties``.

    1. The task's row is locked (select_for_update, no key) for the whole refresh: two refreshes
       of one task (two results arriving together) run one after the other, and the second reads
       every row the first could not see, so no result's tie is lost; a result's own transaction
       never waits for a refresh. Idempotent.
    2. The task's public rows, best first, whose succeeded job has per-image outcomes (their
       compact vectors, per_image.outcome_vectors: built from the file once, then read from the
       database) holding the same images as the best such row's take part; a row without them
       (or on a task not ranked by top-1, see uses_paired_ties) is left to the interval rule
       pages apply (selectors.mark_ties).
    3. paired.tie_groups groups them; each row stores its shared rank and its test against its
       group's leader (Δ, interval, b, c, p, Holm p̃ and m).
    4. Private rows lose any marks (they are not on the public board the rule ranked). Rows whose
       marks changed are written and the board's version is bumped, so after the commit the
       warmer renders the board with them. A task the rule does not apply to only loses stale
       marks.
    Cost: four queries (lock, rows, jobs, vectors) plus one for the reference's set codes on a
    multi-set task; a file read only for a job whose vectors are not built yet."""
    with transaction.atomic():
        # FOR NO KEY UPDATE: refreshes of the task wait for each other, but a result's transaction
        # inserting a row or job that references the task (FOR KEY SHARE) never waits for one
        # (no ordering: Task's default one joins the benchmark, whose row every bump updates)
        list(Task.objects.select_for_update(no_key=True).filter(pk=task.pk).order_by().values_list("pk", flat=True))
        return _ties_compute(task)


def _ties_compute(task: Task) -> int:
    if not uses_paired_ties(task):
        if BoardEntry.objects.filter(task=task).exclude(tie_rank=None).update(tie_rank=None, paired={}):
            bump([task.benchmark_id])
        return 0
    entries = list(BoardEntry.objects.filter(task=task, is_public=True)
                   .order_by("-value" if task.higher_is_better else "value", "pk"))
    before = {entry.pk: (entry.tie_rank, entry.paired) for entry in entries}
    members: list[BoardEntry] = []
    rights = []
    reference = None
    if entries:
        jobs = {job.submission_id: job for job in EvaluationJob.objects.filter(
            task=task, state=EvaluationJob.State.SUCCEEDED, submission_id__in=[e.submission_id for e in entries],
        ).exclude(per_image="").exclude(per_image__isnull=True).select_related("task")}
        found, problems = outcome_vectors(jobs.values(), fields=("hits",))
        # The reference is the images most rows scored (the best row's on a tie), not the best
        # row's alone: one file of other images at the top must not leave every row to the
        # interval rule; it is that file's row that is left.
        ranked = [found[job.pk] for e in entries if (job := jobs.get(e.submission_id)) and job.pk in found]
        shapes = Counter((v.key_names, v.n_images, v.keys_digest) for v in ranked)  # counted in rank order
        common = max(shapes, key=shapes.__getitem__) if shapes else None
        reference = next((v for v in ranked if (v.key_names, v.n_images, v.keys_digest) == common), None)
        for entry in entries:
            job = jobs.get(entry.submission_id)
            vectors = found.get(job.pk) if job is not None else None
            if vectors is None:
                if job is not None and job.pk in problems:
                    log.warning("board ties of %s: row of submission %s left to the interval rule: %s",
                                task.slug, entry.submission_id, problems[job.pk])
                continue
            try:
                if reference is not None:
                    same_images(vectors, reference)
            except ValueError as exc:
                log.warning("board ties of %s: row of submission %s left to the interval rule: %s",
                            task.slug, entry.submission_id, exc)
                continue
            members.append(entry)
            rights.append(right(vectors))
    marks = paired.tie_groups(rights, sets=set_codes(reference)) if reference is not None else []
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


def benchmark_ties_refresh(*, benchmark: Benchmark) -> dict[str, int]:
    """Recompute the paired ties of every task of ``benchmark`` now (board_ties_refresh, one
    transaction per task): {task slug: rows the rule covered}. For ``manage.py refresh_ties``
    after a broker outage lost refresh messages, or after a change to the tie rule."""
    return {task.slug: board_ties_refresh(task=task)
            for task in Task.objects.filter(benchmark=benchmark).select_related("benchmark").order_by("position")}


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
        board_ties_refresh_later(task=task)
    bump(BoardEntry.objects.filter(submission=submission).values_list("benchmark_id", flat=True),
         hides=submission.visibility != Submission.Visibility.PUBLIC)
