"""The reaper's Celery task: a thin wrapper around leaderboard.jobs.reaper.jobs_reap, run by beat
(settings.CELERY_BEAT_SCHEDULE, "reap-jobs") on the site queue."""
from __future__ import annotations

from leaderboard.celery import app

from .reaper import jobs_reap

# Bound to the site's app explicitly (not shared_task): a process that also imports the runner's
# Celery app must still send this to the site's broker.


@app.task(name="leaderboard.reap_jobs", ignore_result=True)
def reap_jobs() -> dict[str, int]:
    return jobs_reap()
