"""Site Celery tasks of submissions: thin wrappers that load by id and call a service."""
from __future__ import annotations

from leaderboard.celery import app

from .validation import submission_validate

# Bound to the site's app explicitly (not shared_task): a process that also imports the runner's
# Celery app must still send these to the site's broker.


@app.task(name="leaderboard.validate_submission", ignore_result=True)
def validate_submission(submission_id: int) -> None:
    submission_validate(submission_id=submission_id)
