"""The site's Celery app. Queue "site" carries validating an upload
(leaderboard.validate_submission, submissions/tasks.py), the reaper (leaderboard.reap_jobs,
jobs/tasks.py, sent by beat every REAPER_INTERVAL_SECONDS), and two board tasks sent after a
board's commit (boards/tasks.py): warming its pages (leaderboard.warm_boards) and refreshing a
task's paired ties (leaderboard.refresh_ties). A submission's board rows themselves are written
when it is aggregated (jobs/transitions.py), in the process that ended its last job. Runner jobs are sent by name (runner.spec.EVALUATE_TASK_NAME) to
"runner.<pool>" queues that runner nodes consume."""
from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "leaderboard.settings")

app = Celery("leaderboard")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
