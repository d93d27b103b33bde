"""Site Celery tasks of the boards, thin wrappers: warming the page cache after a board changes
(leaderboard/boards/versions.py sends it after the commit) and refreshing a task's paired ties
after a result or a per-image file arrives (services.board_ties_refresh_later sends it after the
commit)."""
from __future__ import annotations

from leaderboard.benchmarks.models import Task
from leaderboard.celery import app

from .services import board_ties_refresh
from .warming import boards_warm

# Bound to the site's app explicitly (not shared_task): a process that also imports the runner's
# Celery app must still send this to the site's broker.


@app.task(name="leaderboard.warm_boards", ignore_result=True)
def warm_boards(benchmark_ids: list[int]) -> dict[str, int]:
    return boards_warm(benchmark_ids=benchmark_ids)


@app.task(name="leaderboard.refresh_ties", ignore_result=True, acks_late=True)
def refresh_ties(task_ids: list[int]) -> dict[int, int]:
    """{task id: rows the paired rule covered} for each task still there. Late acks: the refresh
    is idempotent (and locks its task), so a worker lost mid-way costs only a second run."""
    return {task.pk: board_ties_refresh(task=task)
            for task in Task.objects.filter(pk__in=task_ids).select_related("benchmark").order_by("pk")}
