"""The evaluation job's state machine, every transition in one place (DESIGN.md "Lifecycle"):

    (none) ─jobs_create→ pending ─job_dispatch→ dispatched ─job_claim→ running
    running ─job_heartbeat→ running (lease extended)
    running ─job_record_result→ succeeded
    running ─job_record_failure→ pending (a platform error with attempts left) | failed
    running ─job_requeue_lost→ pending (the reaper: the lease expired)
    dispatched ─job_redispatch→ pending → dispatched (the reaper: the wake-up was lost)
    pending | dispatched | running ─job_fail→ failed (the reaper gives up)
    not ended ─jobs_cancel / a repeating user error→ cancelled

Each transition is a conditional update (or a row locked with select_for_update) whose row
count is checked, so two runners, a runner and the reaper, or a retried request never both
win. When a job ends, :func:`submission_aggregate` ends its submission once all its jobs have
ended and puts each new result on its board. The runner API views, the submission services and
the reaper (leaderboard.jobs.reaper) call these; nothing here imports them."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from leaderboard.boards.services import board_entry_upsert
from leaderboard.celery import app
from leaderboard.runners.models import RunnerNode
from leaderboard.runners.services import runner_touch
from leaderboard.submissions.models import EvaluationJob, Submission
from leaderboard.submissions.outcomes import failures_text
from runner.spec import (
    ERROR_KINDS,
    EVALUATE_TASK_NAME,
    MAX_FAILURE_MESSAGE_CHARS,
    MAX_LOG_TAIL_CHARS,
    MAX_PROGRESS_MESSAGE_CHARS,
    ErrorKind,
    JobSpec,
    SpecError,
    SubmissionSpec,
    TaskSpec,
    failure_repeats,
    is_user_error,
    validate_result,
)

log = logging.getLogger(__name__)
# What a user reads under a job that an infrastructure error (runner/spec.py) ended.
INFRASTRUCTURE_NOTE = "This is a platform fault, not your submission's: it does not count against your quota."


class Conflict(Exception):
    """The attempt is not (or no longer) the live one."""


# --------------------------------------------------------------------------------------------
# Creating and dispatching
# --------------------------------------------------------------------------------------------
def jobs_create(*, submission: Submission) -> list[int]:
    """(none) → pending: one job per task of the submission's benchmark (those that exist already
    are kept), each dispatched once the caller's transaction commits. Call it inside
    ``transaction.atomic()``. Returns the ids of all the submission's jobs."""
    jobs = [EvaluationJob(submission=submission, task=task) for task in submission.benchmark.tasks.all()]
    EvaluationJob.objects.bulk_create(jobs, ignore_conflicts=True)
    job_ids = list(EvaluationJob.objects.filter(submission=submission).values_list("pk", flat=True))
    transaction.on_commit(lambda: [job_dispatch(job_id=j) for j in job_ids])
    return job_ids


def send_evaluate(*, job_id: int, queue: str) -> None:
    """Wake a runner of the job's pool: a message on ``queue`` ("runner.<pool>") naming
    runner.spec.EVALUATE_TASK_NAME with only the id; the runner claims the rest. Raises the
    broker's own error (kombu, OSError) at once when the broker is down."""
    # A fresh connection per dispatch (they are rare): a broker that went away and came back is
    # simply reached again, and one that is down raises at once instead of retrying for minutes.
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=5)
        app.send_task(EVALUATE_TASK_NAME, args=[job_id], queue=queue, connection=connection, retry=False)


def job_dispatch(*, job_id: int) -> bool:
    """pending → dispatched, then send. True when a message was sent; False when the job was
    not pending or the broker refused, in which case it goes back to pending and the reaper tries
    again: nothing is lost while the broker is down. EvaluationJob.DoesNotExist for an unknown id."""
    now = timezone.now()
    job = EvaluationJob.objects.select_related("task").get(pk=job_id)
    marked = EvaluationJob.objects.filter(pk=job_id, state=EvaluationJob.State.PENDING).update(
        state=EvaluationJob.State.DISPATCHED, dispatched_at=now, dispatches=F("dispatches") + 1
    )
    if not marked:
        return False
    try:
        send_evaluate(job_id=job_id, queue=job.task.queue)
    except Exception as exc:
        log.warning("broker refused job %s (%s); it stays pending for the reaper", job_id, exc)
        EvaluationJob.objects.filter(pk=job_id, state=EvaluationJob.State.DISPATCHED).update(
            state=EvaluationJob.State.PENDING, dispatches=F("dispatches") - 1
        )
        return False
    return True


def job_redispatch(*, job: EvaluationJob) -> bool:
    """dispatched → pending → dispatched: send again a job whose wake-up was lost (the reaper
    decides when). ``job`` as the caller read it; nothing happens when it changed since (its
    state or dispatch count). True when a message was sent."""
    requeued = EvaluationJob.objects.filter(pk=job.pk, state=EvaluationJob.State.DISPATCHED,
                                            dispatches=job.dispatches).update(state=EvaluationJob.State.PENDING)
    return bool(requeued) and job_dispatch(job_id=job.pk)


# --------------------------------------------------------------------------------------------
# A runner's attempt: claim, heartbeat, download
# --------------------------------------------------------------------------------------------
def job_spec(job: EvaluationJob) -> JobSpec:
    """What a claim hands the runner (runner/spec.py's wire contract): the job's task, its
    submission's artifact and settings, and the lease and heartbeat periods in seconds. ``job``
    with ``task__benchmark`` and ``submission__benchmark`` loaded (as :func:`job_claim` returns it)."""
    task, sub = job.task, job.submission
    return JobSpec(
        job_id=job.pk,
        attempt=job.attempt,
        task=TaskSpec(slug=task.slug, kind=task.benchmark.kind, dataset=task.dataset, params=task.params,
                      time_limit_s=task.time_limit_s),
        submission=SubmissionSpec(id=sub.pk, kind=sub.benchmark.kind, artifact_format=sub.artifact_format,
                                  artifact_sha256=sub.artifact_sha256, artifact_size=sub.artifact_size,
                                  hparams=sub.hparams, is_baseline=sub.is_baseline),
        lease_seconds=settings.JOB_LEASE_SECONDS,
        heartbeat_seconds=settings.JOB_HEARTBEAT_SECONDS,
    )


@dataclass
class ClaimRefused:
    """A claim the site turned down although the job waits: this runner lacks the task's data.
    The job went back to pending; the reaper sends it again once a runner that holds the data
    is online (so the same runner is not handed it again and again)."""

    dataset: str
    message: str


def job_claim(*, job_id: int, runner: RunnerNode, datasets: set[str] | None = None) -> EvaluationJob | ClaimRefused | None:
    """pending | dispatched | running with an expired lease → running, attempt + 1, leased to
    ``runner`` for settings.JOB_LEASE_SECONDS. Returns the job (with task, benchmark and
    submission loaded) when this call started an attempt; None (→ 409) when a live attempt
    exists, the job ended, its submission is not queued or running, or the attempt limit is
    reached. ``datasets``: the names the runner says it holds (None: not checked); a runner
    without the task's dataset gets ClaimRefused, no attempt used, and the job goes back to
    pending for a runner that holds it (an infrastructure event: nothing counts against the
    submitter). Raises nothing for an unknown id (None)."""
    now = timezone.now()
    claimable = Q(state__in=[EvaluationJob.State.PENDING, EvaluationJob.State.DISPATCHED]) | Q(
        state=EvaluationJob.State.RUNNING, lease_expires_at__lt=now
    )
    live_submission = Submission.objects.filter(
        status__in=[Submission.Status.QUEUED, Submission.Status.RUNNING]
    ).values("pk")
    if datasets is not None:
        needed = (EvaluationJob.objects.filter(pk=job_id).exclude(task__dataset="")
                  .values_list("task__dataset", flat=True).first())
        if needed and needed not in datasets:
            message = (f"{runner.name} does not hold dataset {needed}; back in the queue for a runner that "
                       "does")[:MAX_PROGRESS_MESSAGE_CHARS]
            EvaluationJob.objects.filter(pk=job_id, state=EvaluationJob.State.DISPATCHED).update(
                state=EvaluationJob.State.PENDING, progress_message=message)
            log.info("job %s: refused to %s, which lacks dataset %s", job_id, runner.name, needed)
            return ClaimRefused(needed, message)
    claimed = (
        EvaluationJob.objects.filter(pk=job_id, attempt__lt=settings.JOB_MAX_ATTEMPTS)
        .filter(claimable)
        .filter(submission_id__in=live_submission)
        .update(
            state=EvaluationJob.State.RUNNING,
            attempt=F("attempt") + 1,
            runner=runner,
            claimed_at=now,
            lease_expires_at=now + timedelta(seconds=settings.JOB_LEASE_SECONDS),
            progress=0.0,
            progress_message="claimed",
        )
    )
    if claimed != 1:
        return None
    job = EvaluationJob.objects.select_related("task__benchmark", "submission__benchmark").get(pk=job_id)
    Submission.objects.filter(pk=job.submission_id, status=Submission.Status.QUEUED).update(
        status=Submission.Status.RUNNING
    )
    return job


def _live(job_id: int, runner: RunnerNode, attempt: int) -> QuerySet[EvaluationJob]:
    return EvaluationJob.objects.filter(
        pk=job_id, runner=runner, attempt=attempt, state=EvaluationJob.State.RUNNING
    )


def job_heartbeat(*, job_id: int, runner: RunnerNode, attempt: int, progress: float = 0.0,
                  message: str = "") -> datetime | None:
    """running → running: extend the lease of a live attempt by settings.JOB_LEASE_SECONDS and
    record its progress (a fraction, clamped to [0, 1]) and message (cut to 200 characters);
    the runner counts as alive either way. Returns the new lease end, or None when the attempt
    is not live (the runner should stop)."""
    lease = timezone.now() + timedelta(seconds=settings.JOB_LEASE_SECONDS)
    progress = min(1.0, max(0.0, float(progress)))
    updated = _live(job_id, runner, attempt).update(
        lease_expires_at=lease,
        progress=progress,
        progress_message=str(message)[:MAX_PROGRESS_MESSAGE_CHARS],
    )
    runner_touch(runner=runner)
    return lease if updated == 1 else None


def downloadable_job(*, job_id: int, runner: RunnerNode, attempt: int) -> EvaluationJob | None:
    """The job (its submission loaded) whose artifact ``runner`` may download now: only during its
    live ``attempt``. None otherwise."""
    return _live(job_id, runner, attempt).select_related("submission").first()


# --------------------------------------------------------------------------------------------
# Ending an attempt
# --------------------------------------------------------------------------------------------
@dataclass
class Recorded:
    """What an end-of-attempt transition did: the job as it now is, and whether this was a repeat
    of a post already recorded (then nothing changed)."""

    job: EvaluationJob
    duplicate: bool


def job_record_result(*, job_id: int, runner: RunnerNode, attempt: int, result: Any,
                      log_tail: str = "") -> Recorded:
    """running → succeeded with a validated result document (runner/spec.py's result schema);
    ``log_tail`` keeps its last MAX_LOG_TAIL_CHARS characters. The submission is aggregated once this
    commits. Posting the same attempt's result again changes nothing (``duplicate``). Raises
    Conflict for any other attempt, SpecError when the document is bad, EvaluationJob.DoesNotExist
    for an unknown id."""
    with transaction.atomic():
        job = EvaluationJob.objects.select_for_update().select_related("task").get(pk=job_id)
        if job.state == EvaluationJob.State.SUCCEEDED and job.result_attempt == attempt and job.runner_id == runner.pk:
            return Recorded(job, duplicate=True)
        if job.state != EvaluationJob.State.RUNNING or job.attempt != attempt or job.runner_id != runner.pk:
            raise Conflict(f"attempt {attempt} of job {job_id} is not live (state {job.state}, attempt {job.attempt})")
        validate_result(result, job.task.slug)
        job.state = EvaluationJob.State.SUCCEEDED
        job.result = result
        job.result_attempt = attempt
        job.progress = 1.0
        job.progress_message = "done"
        job.error_kind = job.error_message = ""
        job.log_tail = str(log_tail)[-MAX_LOG_TAIL_CHARS:]
        job.finished_at = timezone.now()
        job.save()
        transaction.on_commit(lambda: submission_aggregate(submission_id=job.submission_id))
    return Recorded(job, duplicate=False)


def job_record_failure(*, job_id: int, runner: RunnerNode, attempt: int, kind: str, message: str,
                       log_tail: str = "", repeats: Any = None) -> Recorded:
    """running → failed or pending. A user error ends the job; an infrastructure error sends it
    back to pending (and to the broker once this commits) while attempts remain (another runner
    may hold the dataset), and fails it after that, its message saying it does not count. A user
    error certain to recur on the submission's other tasks (``repeats``, see
    runner.spec.failure_repeats) cancels those not yet ended (:func:`_skip_siblings`). ``kind`` is
    one of runner.spec.ERROR_KINDS; ``message`` is cut to 4,000 characters. Posting the same
    attempt's failure again changes nothing (``duplicate``). Raises SpecError for an unknown kind
    or a ``repeats`` that is not a boolean or that the kind cannot carry, Conflict for an attempt
    that is not live, EvaluationJob.DoesNotExist for an unknown id."""
    if kind not in ERROR_KINDS:
        raise SpecError(f"unknown error kind {kind!r}; expected one of {', '.join(sorted(ERROR_KINDS))}")
    repeats = failure_repeats(kind, repeats)
    with transaction.atomic():
        job = EvaluationJob.objects.select_for_update().get(pk=job_id)
        if job.state in EvaluationJob.ENDED_STATES and job.attempt == attempt and job.runner_id == runner.pk:
            return Recorded(job, duplicate=True)
        if job.state != EvaluationJob.State.RUNNING or job.attempt != attempt or job.runner_id != runner.pk:
            raise Conflict(f"attempt {attempt} of job {job_id} is not live")
        job.error_kind = kind
        job.error_message = str(message)[:MAX_FAILURE_MESSAGE_CHARS]
        job.log_tail = str(log_tail)[-MAX_LOG_TAIL_CHARS:]
        retry = not is_user_error(kind) and job.attempt < settings.JOB_MAX_ATTEMPTS
        if retry:
            job.state = EvaluationJob.State.PENDING
            job.runner = None
            job.lease_expires_at = None
            job.progress_message = f"retrying after: {kind}"
        else:
            job.state = EvaluationJob.State.FAILED
            job.finished_at = timezone.now()
            if not is_user_error(kind) and INFRASTRUCTURE_NOTE not in job.error_message:
                job.error_message = (f"{job.error_message[:3700]} (attempt {job.attempt} of "
                                     f"{settings.JOB_MAX_ATTEMPTS}) {INFRASTRUCTURE_NOTE}")
        job.save()
        if repeats and is_user_error(kind):
            _skip_siblings(job)
        if retry:
            transaction.on_commit(lambda: job_dispatch(job_id=job_id))
        else:
            transaction.on_commit(lambda: submission_aggregate(submission_id=job.submission_id))
    return Recorded(job, duplicate=False)


def _skip_siblings(job: EvaluationJob) -> int:
    """Cancel the jobs of ``job``'s submission that have not ended, "skipped: same failure as
    <task>": pending and dispatched ones are never claimed, a running one's runner gets 409 at
    its next heartbeat and stops. Returns how many were skipped."""
    return EvaluationJob.objects.filter(submission_id=job.submission_id).exclude(pk=job.pk).exclude(
        state__in=EvaluationJob.ENDED_STATES
    ).update(state=EvaluationJob.State.CANCELLED, error_kind="", lease_expires_at=None, finished_at=timezone.now(),
             error_message=f"{EvaluationJob.SKIPPED_PREFIX}{job.task.slug}")


# --------------------------------------------------------------------------------------------
# The reaper's transitions (leaderboard.jobs.reaper decides when)
# --------------------------------------------------------------------------------------------
def job_requeue_lost(*, job: EvaluationJob, now: datetime) -> bool:
    """running with a lease expired before ``now`` → pending, then dispatched: its runner stopped
    sending heartbeats. ``job`` as the caller read it (its runner loaded); nothing happens when
    its attempt changed or its lease was extended since. True when it was requeued (whether or
    not the broker took the new message: a refused one stays pending for the reaper)."""
    runner_name = job.runner.name if job.runner else "a runner"
    requeued = EvaluationJob.objects.filter(pk=job.pk, state=EvaluationJob.State.RUNNING, attempt=job.attempt,
                                            lease_expires_at__lt=now).update(
        state=EvaluationJob.State.PENDING, runner=None, lease_expires_at=None,
        error_kind=ErrorKind.LEASE_EXPIRED,
        error_message=f"{runner_name} stopped sending heartbeats during attempt {job.attempt}; requeued.",
        progress_message="requeued: runner lost",
    )
    if requeued:
        job_dispatch(job_id=job.pk)
    return bool(requeued)


def job_fail(*, job: EvaluationJob, kind: str, message: str) -> bool:
    """pending | dispatched | running → failed with ``kind`` (an infrastructure kind of
    runner.spec.ErrorKind) and ``message`` for the submitter, then aggregate its submission.
    ``job`` as the caller read it; nothing happens when its state or attempt changed since.
    True when it failed it."""
    now = timezone.now()
    changed = EvaluationJob.objects.filter(pk=job.pk, state=job.state, attempt=job.attempt).update(
        state=EvaluationJob.State.FAILED, error_kind=kind, error_message=message, finished_at=now
    )
    if changed:
        submission_aggregate(submission_id=job.submission_id)
    return bool(changed)


def jobs_cancel(*, submission_id: int, reason: str, now: datetime | None = None) -> int:
    """Every job of the submission not yet ended → cancelled with ``reason`` as its message,
    finished at ``now`` (default: now); a running one's runner finds out at its next heartbeat
    (409). Returns how many were cancelled."""
    return EvaluationJob.objects.filter(submission_id=submission_id).exclude(
        state__in=EvaluationJob.ENDED_STATES
    ).update(state=EvaluationJob.State.CANCELLED, error_message=reason, finished_at=now or timezone.now())


# --------------------------------------------------------------------------------------------
# When jobs end: the submission
# --------------------------------------------------------------------------------------------
def submission_aggregate(*, submission_id: int) -> Submission:
    """Once every job of a submission has ended: finished when all succeeded, failed otherwise,
    with a message that names each failed task. Infrastructure-only failures never count. Each
    succeeded job not yet on its board gets its row (boards.services.board_entry_upsert, which
    bumps the board's version); a queued submission with a running job becomes running. Safe to
    call at any time and more than once (the submission's row is locked). Returns the
    submission; Submission.DoesNotExist for an unknown id."""
    with transaction.atomic():
        submission = Submission.objects.select_for_update().get(pk=submission_id)
        jobs = list(submission.jobs.select_related("task"))
        # A result is written once per attempt, edits to the submission reach its rows through
        # board_entries_refresh_submission and a rerun deletes them: only new results need a row.
        on_board = set(submission.board_entries.values_list("task_id", flat=True))
        for job in jobs:
            if job.state == EvaluationJob.State.SUCCEEDED and job.task_id not in on_board:
                board_entry_upsert(job=job, submission=submission)
        if submission.status in Submission.ENDED_STATUSES or not jobs:
            return submission
        if not all(job.has_ended for job in jobs):
            if any(job.state == EvaluationJob.State.RUNNING for job in jobs) and submission.status == Submission.Status.QUEUED:
                submission.status = Submission.Status.RUNNING
                submission.save(update_fields=["status", "updated_at"])
            return submission
        failed = [job for job in jobs if job.state != EvaluationJob.State.SUCCEEDED]
        submission.finished_at = timezone.now()
        if not failed:
            submission.status = Submission.Status.FINISHED
            submission.error_code = submission.error_message = ""
        else:
            submission.status = Submission.Status.FAILED
            user_failures = [j for j in failed if is_user_error(j.error_kind)]
            submission.counts_against_quota = bool(user_failures)
            submission.error_code = (user_failures or failed)[0].error_kind or "cancelled"
            submission.error_message = failures_text(failed, lambda job: job.error_message or job.state)
        submission.save()
    return submission
