"""Site Celery tasks of the boards: a thin wrapper that warms the page cache after a board
changes (leaderboard/boards/versions.py sends it after the commit)."""
from __future__ import annotations

from leaderboard.celery import app

from .warming import boards_warm

# Bound to the site's app explicitly (not shared_task): a process that also imports the runner's
# Celery app must still send this to the site's broker.


@app.task(name="leaderboard.warm_boards", ignore_result=True)
def warm_boards(benchmark_ids: list[int]) -> dict[str, int]:
    return boards_warm(benchmark_ids=benchmark_ids)
