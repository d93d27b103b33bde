"""The paired tie refresh as production runs it: the result's commit sends ``leaderboard.refresh_ties``
to the Redis broker (no inline task), a real Celery worker consuming the "site" queue takes it, and
the ties are on the board afterwards (the worker warms the board's cached page with them), while
before the worker runs the saved rows carry no tie."""

from __future__ import annotations

import time

import pytest
from celery.contrib.testing.worker import start_worker

from leaderboard.boards.models import BoardEntry
from runner.spec import celery_broker_settings
from tests.integration.boards.test_paired_ties import ranks, scored

pytestmark = [pytest.mark.django_db(transaction=True)]


def switch_broker(app, url: str, options: dict) -> None:
    """Send through broker ``url`` (with its transport ``options``) from now on: the settings, and
    the connection and producer pools the app built for the previous broker (site tasks sent with
    ``.delay`` use them)."""
    app.conf.broker_url, app.conf.broker_transport_options = url, options
    app._pool = None  # rebuilt from the new settings on the next send
    app.amqp._producer_pool = None


def test_a_site_worker_takes_the_refresh_from_the_broker_and_the_board_shows_the_tie(
    client,
    alice,
    bob,
    redis_url,
    _celery_for_tests,
    catalogue,
):
    app = _celery_for_tests
    before = app.conf.broker_url, app.conf.broker_transport_options
    redis = celery_broker_settings(redis_url)
    switch_broker(app, redis["broker_url"], redis["broker_transport_options"])
    app.conf.task_always_eager = False  # a real message on the broker, as in production
    try:
        scored(alice, "alice-net", range(0, 20))
        scored(bob, "bob-net", [*range(3, 20), *range(100, 105)])  # b 3, c 5 against alice: tied
        entries = BoardEntry.objects.filter(task__slug="digits")
        assert [e.tie_rank for e in entries] == [None, None]  # saved; their refreshes wait in the broker
        with start_worker(app, pool="solo", queues=["site"], perform_ping_check=False, shutdown_timeout=30):
            deadline = time.monotonic() + 60
            # the worker refreshes the ties, then warms the board: visitors then get the cached
            # render (a hit, rendered by the worker) and it shows the tie
            while not (
                client.get("/b/digits/")["X-Page-Cache"] == "hit"
                and ranks(client) == {"alice-net": "=1", "bob-net": "=1"}
            ):
                assert time.monotonic() < deadline, (
                    "the site worker never refreshed the ties and warmed the board"
                )
                time.sleep(0.2)
        assert all(e.tie_rank == 1 for e in entries.all())
        assert BoardEntry.objects.get(submission_name="bob-net").paired["b"] == 3
    finally:
        app.conf.task_always_eager = True
        switch_broker(app, *before)
