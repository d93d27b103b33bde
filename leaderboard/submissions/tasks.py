"""Site Celery tasks: thin wrappers that load by id and call a service."""
from __future__ import annotations

from leaderboard.celery import app

from . import services

# Bound to the site's app explicitly (not shared_task): a process that also imports the runner's
# Celery app must still send these to the site's broker.


@app.task(name="leaderboard.validate_submission", ignore_result=True)
def validate_submission(submission_id: int) -> None:
    services.submission_validate(submission_id=submission_id)


@app.task(name="leaderboard.reap_jobs", ignore_result=True)
def reap_jobs() -> dict:
    from leaderboard.runners.services import jobs_reap

    return jobs_reap()
