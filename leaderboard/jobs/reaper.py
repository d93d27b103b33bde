"""The periodic safety net (DESIGN.md "Lifecycle" step 5): it decides which stale uploads and jobs
need a transition and calls leaderboard.jobs.transitions for each. Celery runs it every
settings.REAPER_INTERVAL_SECONDS (leaderboard.jobs.tasks.reap_jobs)."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from leaderboard.runners.selectors import WaitReason, data_title, pool_of, pools_now, task_blocker
from leaderboard.submissions.models import EvaluationJob, Submission
from leaderboard.submissions.services import submission_enqueue_validation
from runner.spec import ErrorKind

from .transitions import job_dispatch, job_fail, job_redispatch, job_requeue_lost, submission_aggregate

log = logging.getLogger(__name__)
MAX_SUBMISSIONS = 100  # uploads one run sends to validation, and submissions it aggregates
MAX_JOBS = 500  # jobs of each state one run looks at


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
    """One pass of the safety net. Returns how many uploads and jobs each step moved, keyed
    "validations_sent", "dispatched", "redispatched", "expired", "failed", "aggregated".

    1. uploads never validated (the broker was down at upload) are sent to the validation task
       again; the reaper reads none of their files (hashing is the task's: up to 1 GiB each),
       and a message sent twice is harmless (validation claims the upload first);
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
       reason that names the cause (runners.selectors.task_blocker);
    4. running jobs whose lease expired (a dead runner) go back to pending and are sent again,
       and fail after the attempt limit;
    5. submissions whose jobs all ended are aggregated.
    """
    now = timezone.now()
    counts = {"validations_sent": 0, "dispatched": 0, "redispatched": 0, "expired": 0, "failed": 0,
              "aggregated": 0}
    grace = now - timedelta(seconds=5)

    stranded = Submission.objects.filter(status=Submission.Status.UPLOADED, created_at__lt=grace)
    for sub_id in stranded.values_list("pk", flat=True)[:MAX_SUBMISSIONS]:
        counts["validations_sent"] += submission_enqueue_validation(submission_id=sub_id)

    stale = now - timedelta(seconds=settings.JOB_DISPATCH_TIMEOUT_SECONDS)
    give_up = now - timedelta(seconds=settings.JOB_DISPATCH_TIMEOUT_SECONDS * settings.JOB_MAX_DISPATCHES)
    pools = pools_now()
    live_subs = [Submission.Status.QUEUED, Submission.Status.RUNNING]
    pending = EvaluationJob.objects.select_related("task").filter(
        state=EvaluationJob.State.PENDING, submission__status__in=live_subs, created_at__lt=grace)
    for job in pending[:MAX_JOBS]:
        blocker = task_blocker(job.task, pools)
        if blocker is not None and blocker.code == "no_runner_with_data":
            if job.created_at < give_up:
                counts["failed"] += job_fail(job=job, kind=ErrorKind.NEVER_CLAIMED, message=_gave_up(job, blocker, now))
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
    )[:MAX_JOBS]:
        queue_pool = pools.get(pool_of(job.task.queue))
        online = len(queue_pool.online) if queue_pool else 0
        idle = len(queue_pool.idle(queue_pool.online)) if queue_pool else 0
        blocker = task_blocker(job.task, pools)
        if blocker is not None:
            if job.created_at < give_up:
                counts["failed"] += job_fail(job=job, kind=ErrorKind.NEVER_CLAIMED, message=_gave_up(job, blocker, now))
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
            counts["failed"] += job_fail(job=job, kind=ErrorKind.NEVER_CLAIMED, message=(
                f"Idle runners of pool {pool_of(job.task.queue)} did not take this job after {job.dispatches} "
                f"dispatches over {waited} minutes. This is the platform's doing and does not count against "
                "your quota."))
        else:
            # An idle runner should have taken it by now: the wake-up was probably lost (a broker
            # restart, a runner that died holding it). Send another.
            counts["redispatched"] += job_redispatch(job=job)

    for job in EvaluationJob.objects.select_related("runner").filter(
        state=EvaluationJob.State.RUNNING, lease_expires_at__lt=now
    )[:MAX_JOBS]:
        if job.attempt >= settings.JOB_MAX_ATTEMPTS:
            runner_name = job.runner.name if job.runner else "a runner"
            counts["failed"] += job_fail(job=job, kind=ErrorKind.LEASE_EXPIRED, message=(
                f"The job's runner stopped answering {job.attempt} times (last: {runner_name}); giving up. "
                "This is an infrastructure failure and does not count against your quota."))
        else:
            counts["expired"] += job_requeue_lost(job=job, now=now)

    unended = Submission.objects.filter(status__in=live_subs).exclude(
        jobs__state__in=[EvaluationJob.State.PENDING, EvaluationJob.State.DISPATCHED, EvaluationJob.State.RUNNING]
    ).filter(jobs__isnull=False).distinct()
    for sub_id in unended.values_list("pk", flat=True)[:MAX_SUBMISSIONS]:
        submission_aggregate(submission_id=sub_id)
        counts["aggregated"] += 1
    if any(counts.values()):
        log.info("reaper: %s", counts)
    return counts
