"""The visitors' page cache: a board, an export or the home page is rendered once per board state,
and no visitor ever sees a board older than the last result, rerun, rename or deletion."""
from __future__ import annotations

import os

import pytest

from leaderboard.benchmarks.models import Benchmark
from leaderboard.boards.services import board_entries_refresh_submission
from leaderboard.submissions.services import submission_rerun

pytestmark = pytest.mark.django_db

BOARD = "/b/opt-synthetic/?task=opt-f1"


def finish(api, finish_job, sub, loss):
    for job in sub.jobs.select_related("task"):
        finish_job(api, job, final_loss=loss)


def test_a_visitor_gets_the_cached_board_until_a_new_result_lands(client, alice, bob, make_submission, runner_api,
                                                                   finish_job):
    finish(runner_api, finish_job, make_submission(alice, name="first-opt"), 0.2)
    first = client.get(BOARD)
    again = client.get(BOARD)
    assert first["X-Page-Cache"] == "miss" and again["X-Page-Cache"] == "hit"
    assert again.content == first.content and b"first-opt" in again.content
    finish(runner_api, finish_job, make_submission(bob, name="second-opt"), 0.1)
    fresh = client.get(BOARD)
    assert fresh["X-Page-Cache"] == "hit"  # the site worker rendered it after the result's commit
    table = fresh.content.decode().split('id="board"', 1)[1]
    assert table.index("second-opt") < table.index("first-opt")
    home = client.get("/")
    assert client.get("/")["X-Page-Cache"] == "hit" and b"second-opt" in home.content


def test_exports_keep_their_download_name_from_the_cache(client, alice, make_submission, runner_api, finish_job):
    finish(runner_api, finish_job, make_submission(alice, name="csv-opt"), 0.2)
    first = client.get("/b/opt-synthetic/export.csv")
    cached = client.get("/b/opt-synthetic/export.csv")
    assert cached["X-Page-Cache"] == "hit" and cached.content == first.getvalue()
    assert cached["Content-Disposition"] == 'attachment; filename="opt-synthetic-opt-f1.csv"'
    assert cached["Content-Type"].startswith("text/csv")


def test_a_rerun_a_rename_and_a_deletion_each_refresh_the_cached_board(client, alice, make_submission, runner_api,
                                                                        finish_job, django_capture_on_commit_callbacks):
    sub = make_submission(alice, name="old-name")
    finish(runner_api, finish_job, sub, 0.2)
    assert b"old-name" in client.get(BOARD).content
    sub.name = "new-name"
    sub.save()
    board_entries_refresh_submission(submission=sub)
    assert b"new-name" in client.get(BOARD).content
    with django_capture_on_commit_callbacks(execute=True):
        submission_rerun(submission_id=sub.pk)
    assert b"new-name" not in client.get(BOARD).content
    finish(runner_api, finish_job, sub, 0.2)
    assert b"new-name" in client.get(BOARD).content
    sub.delete()
    assert b"new-name" not in client.get(BOARD).content


def test_logged_in_users_are_never_served_from_the_cache_and_see_their_private_rows(
        client, alice, make_submission, runner_api, finish_job):
    finish(runner_api, finish_job, make_submission(alice, name="secret-opt", visibility="private"), 0.2)
    assert b"secret-opt" not in client.get(BOARD).content
    assert client.get(BOARD)["X-Page-Cache"] == "hit"
    client.force_login(alice)
    mine = client.get(BOARD)
    assert "X-Page-Cache" not in mine and b"secret-opt" in mine.content
    client.logout()
    assert b"secret-opt" not in client.get(BOARD).content


def test_editing_a_benchmark_refreshes_its_pages_and_the_cache_can_be_turned_off(client, settings, catalogue):
    assert client.get("/b/opt-synthetic/")["X-Page-Cache"] == "miss"
    bench = Benchmark.objects.get(slug="opt-synthetic")
    bench.description = "A new description for the synthetic functions."
    bench.save()
    assert b"A new description" in client.get("/b/opt-synthetic/").content
    settings.PAGE_CACHE_SECONDS = 0
    assert "X-Page-Cache" not in client.get("/b/opt-synthetic/")
    assert client.get("/b/no-such-board/").status_code == 404


def test_web_processes_share_the_page_cache_through_redis(client, settings, catalogue):
    """With CACHE_URL pointing at Redis (over a real connection), a page one process rendered is a
    hit for every other; a board change is seen by all of them at once."""
    from django.core.cache import caches

    url = os.environ.get("TEST_CACHE_URL", "redis://127.0.0.1:6379/14")
    settings.CACHES = {**settings.CACHES, "shared": {"BACKEND": "leaderboard.redis_cache.RedisCache",
                                                     "LOCATION": url}}
    settings.PAGE_CACHE_ALIAS = "shared"
    caches["shared"].clear()
    assert client.get("/b/digits/")["X-Page-Cache"] == "miss"
    import redis

    assert redis.Redis.from_url(url).keys(":1:page:*"), "the rendered page is stored in Redis"
    assert client.get("/b/digits/")["X-Page-Cache"] == "hit"
    backend = caches["shared"]._cache  # the site's backend makes its redis client once, not per call
    assert backend.get_client() is backend.get_client(write=True)
    Benchmark.objects.get(slug="digits").save()
    assert client.get("/b/digits/")["X-Page-Cache"] == "miss"
    caches["shared"].clear()


def test_a_cache_that_fails_costs_speed_never_a_page(client, settings, catalogue):
    """Redis down (nothing listens on the port): visitors still get every page, rendered afresh."""
    settings.CACHES = {**settings.CACHES, "down": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                                   "LOCATION": "redis://127.0.0.1:9/0",
                                                   "OPTIONS": {"socket_connect_timeout": 0.2}}}
    settings.PAGE_CACHE_ALIAS = "down"
    for url in ("/", "/b/digits/", "/b/digits/export.csv"):
        response = client.get(url)
        assert response.status_code == 200 and "X-Page-Cache" not in response


def test_query_parameters_the_board_ignores_share_one_entry_and_big_pages_are_not_kept(client, settings, catalogue):
    assert client.get("/b/digits/?task=digits")["X-Page-Cache"] == "miss"
    assert client.get("/b/digits/?task=digits&utm_source=x&junk=1")["X-Page-Cache"] == "hit"
    assert client.get("/b/digits/?task=digits&sort=top5")["X-Page-Cache"] == "miss"
    settings.PAGE_CACHE_MAX_BYTES = 100
    assert len(client.get("/b/opt-synthetic/export.json").getvalue()) > 100
    assert client.get("/b/opt-synthetic/export.json")["X-Page-Cache"] == "miss"  # streamed, not kept


def test_a_task_moved_to_another_benchmark_leaves_neither_board_stale(client, catalogue):
    from leaderboard.benchmarks.models import Task

    assert b"opt-f3" in client.get("/b/opt-synthetic/").content
    client.get("/b/digits/")
    task = Task.objects.get(slug="opt-f3")
    task.benchmark = Benchmark.objects.get(slug="digits")
    task.save()
    assert b"opt-f3" not in client.get("/b/opt-synthetic/").content
    assert b"opt-f3" in client.get("/b/digits/").content
