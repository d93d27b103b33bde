"""The site's Celery app: queue "site" for validation, reaping and board work. Runner jobs are
sent by name (runner.evaluate) to "runner.<pool>" queues that runner nodes consume."""
from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "leaderboard.settings")

app = Celery("leaderboard")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
