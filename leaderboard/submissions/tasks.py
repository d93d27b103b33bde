"""Site Celery tasks: thin wrappers that load by id and call a service."""
from __future__ import annotations

from celery import shared_task

from . import services


@shared_task(name="leaderboard.validate_submission", ignore_result=True)
def validate_submission(submission_id: int) -> None:
    services.submission_validate(submission_id=submission_id)


@shared_task(name="leaderboard.reap_jobs", ignore_result=True)
def reap_jobs() -> dict:
    from leaderboard.runners.services import jobs_reap

    return jobs_reap()
