"""The runner side of the job lifecycle: claim, heartbeat, result, failure, and the reaper that
releases stale claims. Each transition is a conditional update whose row count is checked."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from leaderboard.submissions.models import EvaluationJob, Submission
from leaderboard.submissions.services import job_dispatch, submission_aggregate
from runner.spec import (
    ERROR_KINDS,
    ErrorKind,
    JobSpec,
    SpecError,
    SubmissionSpec,
    TaskSpec,
    failure_repeats,
    is_user_error,
    validate_result,
)

from .models import RegistrationCode, RunnerNode
from .selectors import WaitReason, data_title, pool_of, pools_now, task_blocker

log = logging.getLogger(__name__)
LOG_TAIL_CHARS = 20_000
# What a user reads under a job that an infrastructure error (runner/spec.py) ended.
INFRASTRUCTURE_NOTE = "This is a platform fault, not your submission's: it does not count against your quota."


class Conflict(Exception):
    """The attempt is not (or no longer) the live one."""


def job_spec(job: EvaluationJob) -> JobSpec:
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


def runner_touch(*, runner: RunnerNode, version: str = "", report: dict[str, Any] | None = None) -> None:
    """Record that the runner is alive, with what it says of itself: ``report`` is the output of
    runner.spec.validate_node_report (its pools, device and datasets; None values are left as
    they were)."""
    fields: dict[str, Any] = {"last_heartbeat": timezone.now()}
    if version:
        fields["version"] = version[:50]
    for key, value in (report or {}).items():
        if value is not None:
            fields[key] = value
    RunnerNode.objects.filter(pk=runner.pk).update(**fields)


@dataclass
class ClaimRefused:
    """A claim the site turned down although the job waits: this runner lacks the task's data.
    The job went back to pending; the reaper sends it again once a runner that holds the data
    is online (so the same runner is not handed it again and again)."""

    dataset: str
    message: str


def job_claim(*, job_id: int, runner: RunnerNode, datasets: set[str] | None = None) -> EvaluationJob | ClaimRefused | None:
    """Start a new attempt when no live attempt exists: the job was never claimed, or its lease
    expired. Returns None (→ 409) otherwise. ``datasets``: the names the runner says it holds
    (None: not checked); a runner without the task's dataset gets ClaimRefused, no attempt used, and
    the job goes back to pending for a runner that holds it (an infrastructure event: nothing
    counts against the submitter)."""
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
                       "does")[:200]
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


def _live(job_id: int, runner: RunnerNode, attempt: int):
    return EvaluationJob.objects.filter(
        pk=job_id, runner=runner, attempt=attempt, state=EvaluationJob.State.RUNNING
    )


def job_heartbeat(*, job_id: int, runner: RunnerNode, attempt: int, progress: float = 0.0,
                  message: str = "") -> datetime | None:
    """Extend the lease of a live attempt and record progress; the new lease end, or None when
    the attempt is not live."""
    lease = timezone.now() + timedelta(seconds=settings.JOB_LEASE_SECONDS)
    progress = min(1.0, max(0.0, float(progress)))
    updated = _live(job_id, runner, attempt).update(
        lease_expires_at=lease,
        progress=progress,
        progress_message=str(message)[:200],
    )
    runner_touch(runner=runner)
    return lease if updated == 1 else None


def job_can_download(*, job_id: int, runner: RunnerNode, attempt: int) -> EvaluationJob | None:
    return _live(job_id, runner, attempt).select_related("submission").first()


@dataclass
class Recorded:
    job: EvaluationJob
    duplicate: bool


def job_record_result(*, job_id: int, runner: RunnerNode, attempt: int, result: Any,
                      log_tail: str = "") -> Recorded:
    """running → succeeded with a validated result document. Posting the same attempt's result
    again changes nothing; any other attempt gets Conflict. SpecError when the document is bad."""
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
        job.log_tail = str(log_tail)[-LOG_TAIL_CHARS:]
        job.finished_at = timezone.now()
        job.save()
        transaction.on_commit(lambda: submission_aggregate(submission_id=job.submission_id))
    return Recorded(job, duplicate=False)


def job_record_failure(*, job_id: int, runner: RunnerNode, attempt: int, kind: str, message: str,
                       log_tail: str = "", repeats: Any = None) -> Recorded:
    """A user error ends the job; an infrastructure error sends it back to pending while attempts
    remain (another runner may hold the dataset), and fails it after that. A user error certain
    to recur on the submission's other tasks (``repeats``, see runner.spec.failure_repeats)
    cancels those not yet ended (:func:`_skip_siblings`). SpecError for an unknown kind or a
    ``repeats`` that is not a boolean or that the kind cannot carry."""
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
        job.error_message = str(message)[:4000]
        job.log_tail = str(log_tail)[-LOG_TAIL_CHARS:]
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


def _fail(job: EvaluationJob, kind: str, message: str) -> bool:
    now = timezone.now()
    changed = EvaluationJob.objects.filter(pk=job.pk, state=job.state, attempt=job.attempt).update(
        state=EvaluationJob.State.FAILED, error_kind=kind, error_message=message, finished_at=now
    )
    if changed:
        submission_aggregate(submission_id=job.submission_id)
    return bool(changed)


def _gave_up(job: EvaluationJob, blocker: WaitReason, now: datetime) -> str:
    """The failure reason of a job the reaper stops waiting for: it names the cause."""
    waited = int((now - job.created_at).total_seconds() // 60)
    if blocker.code == "no_runner_online":
        cause = (f"No runner of pool {blocker.pool} was online for the {waited} minutes this job waited "
                 f"({blocker.seen}).")
    else:
        cause = (f"No online runner of pool {blocker.pool} held {data_title(job.task)} for the {waited} minutes "
                 "this job waited.")
    return f"{cause} This is the platform's doing and does not count against your quota; a maintainer can re-run it."


def jobs_reap() -> dict[str, int]:
    """The periodic safety net (DESIGN.md "Lifecycle" step 5):

    1. uploads never validated (the broker was down at upload) are validated;
    2. pending jobs (never sent, sent back after an infrastructure error, or refused by a runner
       without their data) are dispatched, unless the online runners of their pool lack their
       dataset or only runners without it sit idle: then they wait here, unsent, so that no
       runner is handed a job it cannot run again and again; they fail after the dispatch
       timeout times the dispatch limit, naming the missing data;
    3. dispatched jobs nobody claimed within the dispatch timeout: while they are still queued
       behind others they wait their turn; once a job sent after them was claimed (queues are
       FIFO), or the pool's runners sit idle, their wake-up was lost and is sent again (failed
       after the dispatch limit); with no runner of the pool online, or none holding their
       data, they fail after waiting the dispatch timeout times the dispatch limit, with a
       reason that names the cause (selectors.task_blocker);
    4. running jobs whose lease expired (a dead runner) go back to pending and are sent again,
       and fail after the attempt limit;
    5. submissions whose jobs all ended are aggregated.
    """
    from leaderboard.submissions.services import submission_validate

    now = timezone.now()
    counts = {"validated": 0, "dispatched": 0, "redispatched": 0, "expired": 0, "failed": 0, "aggregated": 0}
    grace = now - timedelta(seconds=5)

    for sub_id in Submission.objects.filter(status=Submission.Status.UPLOADED, created_at__lt=grace).values_list("pk", flat=True)[:100]:
        submission_validate(submission_id=sub_id)
        counts["validated"] += 1

    stale = now - timedelta(seconds=settings.JOB_DISPATCH_TIMEOUT_SECONDS)
    give_up = now - timedelta(seconds=settings.JOB_DISPATCH_TIMEOUT_SECONDS * settings.JOB_MAX_DISPATCHES)
    pools = pools_now()
    live_subs = [Submission.Status.QUEUED, Submission.Status.RUNNING]
    pending = EvaluationJob.objects.select_related("task").filter(
        state=EvaluationJob.State.PENDING, submission__status__in=live_subs, created_at__lt=grace)
    for job in pending[:500]:
        blocker = task_blocker(job.task, pools)
        if blocker is not None and blocker.code == "no_runner_with_data":
            if job.created_at < give_up:
                counts["failed"] += _fail(job, ErrorKind.NEVER_CLAIMED, _gave_up(job, blocker, now))
            continue
        if blocker is None and job.task.dataset:
            pool = pools[pool_of(job.task.queue)]
            holders = pool.holders(job.task.dataset)
            lacking = [n for n in pool.online if n not in holders]
            if not pool.idle(holders) and pool.idle(lacking):
                continue  # an idle runner without the data would take it first: wait for a holder to be free
        counts["dispatched"] += job_dispatch(job_id=job.pk)

    for job in EvaluationJob.objects.select_related("task").filter(
        state=EvaluationJob.State.DISPATCHED, dispatched_at__lt=stale
    )[:500]:
        pool = pools.get(pool_of(job.task.queue))
        online = len(pool.online) if pool else 0
        idle = len(pool.idle(pool.online)) if pool else 0
        blocker = task_blocker(job.task, pools)
        if blocker is not None:
            if job.created_at < give_up:
                counts["failed"] += _fail(job, ErrorKind.NEVER_CLAIMED, _gave_up(job, blocker, now))
            continue  # no runner that could take it is online yet: keep waiting a while
        same_queue = EvaluationJob.objects.filter(task__queue=job.task.queue, claimed_at__gt=job.dispatched_at)
        # Queues are first in, first out: a job sent after this one and claimed since means this
        # one's wake-up was consumed and lost (a runner died holding it, or a broker restart).
        passed_over = same_queue.filter(dispatched_at__gt=job.dispatched_at).exists()
        # A pool whose online runners are all idle, and which claimed nothing since this job was
        # sent (or, when a job sent before it was claimed late, claimed and finished nothing for a
        # whole dispatch timeout), would have taken it: its wake-up was lost.
        recent = EvaluationJob.objects.filter(Q(claimed_at__gt=stale) | Q(finished_at__gt=stale),
                                              task__queue=job.task.queue)
        quiet_pool = online > 0 and idle == online and (not same_queue.exists() or not recent.exists())
        if not (passed_over or quiet_pool):
            continue  # it waits its turn behind the jobs ahead of it
        waited = int((now - job.created_at).total_seconds() // 60)
        if job.dispatches >= settings.JOB_MAX_DISPATCHES:
            counts["failed"] += _fail(job, ErrorKind.NEVER_CLAIMED, (
                f"Idle runners of pool {pool_of(job.task.queue)} did not take this job after {job.dispatches} "
                f"dispatches over {waited} minutes. This is the platform's doing and does not count against "
                "your quota."))
        elif EvaluationJob.objects.filter(pk=job.pk, state=EvaluationJob.State.DISPATCHED,
                                          dispatches=job.dispatches).update(state=EvaluationJob.State.PENDING):
            # An idle runner should have taken it by now: the wake-up was probably lost (a broker
            # restart, a runner that died holding it). Send another.
            counts["redispatched"] += job_dispatch(job_id=job.pk)

    for job in EvaluationJob.objects.select_related("runner").filter(
        state=EvaluationJob.State.RUNNING, lease_expires_at__lt=now
    )[:500]:
        runner_name = job.runner.name if job.runner else "a runner"
        if job.attempt >= settings.JOB_MAX_ATTEMPTS:
            counts["failed"] += _fail(job, ErrorKind.LEASE_EXPIRED, (
                f"The job's runner stopped answering {job.attempt} times (last: {runner_name}); giving up. "
                "This is an infrastructure failure and does not count against your quota."))
        elif EvaluationJob.objects.filter(pk=job.pk, state=EvaluationJob.State.RUNNING, attempt=job.attempt,
                                          lease_expires_at__lt=now).update(
            state=EvaluationJob.State.PENDING, runner=None, lease_expires_at=None,
            error_kind=ErrorKind.LEASE_EXPIRED,
            error_message=f"{runner_name} stopped sending heartbeats during attempt {job.attempt}; requeued.",
            progress_message="requeued: runner lost",
        ):
            counts["expired"] += 1
            job_dispatch(job_id=job.pk)

    unended = Submission.objects.filter(status__in=live_subs).exclude(
        jobs__state__in=[EvaluationJob.State.PENDING, EvaluationJob.State.DISPATCHED, EvaluationJob.State.RUNNING]
    ).filter(jobs__isnull=False).distinct()
    for sub_id in unended.values_list("pk", flat=True)[:100]:
        submission_aggregate(submission_id=sub_id)
        counts["aggregated"] += 1
    if any(counts.values()):
        log.info("reaper: %s", counts)
    return counts


class RegistrationRefused(Exception):
    """A registration code that is unknown, used or expired."""


def runner_register(*, code: str, name: str) -> tuple[RunnerNode, str]:
    """Exchange a one-time registration code for a new runner's token (conditional update: a code
    works once, before it expires)."""
    from leaderboard.accounts.models import hash_token

    name = name.strip()[:100]
    if not name:
        raise RegistrationRefused("a runner name is required")
    now = timezone.now()
    with transaction.atomic():
        entry = RegistrationCode.objects.filter(code_hash=hash_token(code.strip()), used_at__isnull=True,
                                                expires_at__gt=now).first()
        if entry is None or not RegistrationCode.objects.filter(pk=entry.pk, used_at__isnull=True).update(used_at=now):
            raise RegistrationRefused("this registration code is unknown, used or expired; ask for a new one")
        if RunnerNode.objects.filter(name=name).exists():
            raise RegistrationRefused(f"a runner named {name!r} exists already; choose another name")
        node, token = RunnerNode.register(name=name, pools=entry.pools)
        RegistrationCode.objects.filter(pk=entry.pk).update(runner=node)
    return node, token
