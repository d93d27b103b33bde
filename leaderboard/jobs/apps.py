from django.apps import AppConfig


class JobsConfig(AppConfig):
    """No models; installed so that Celery finds the reaper's task (jobs/tasks.py)."""

    name = "leaderboard.jobs"
    label = "jobs"
