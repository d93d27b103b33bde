"""No visitor pays for a render: after a board changes, the site worker renders its pages, exports,
API leaderboard and the home page into the cache; until that render is in (a few seconds at most)
visitors get the previous one, never a stale one after that. Every cached page answers conditional
requests from the board version, exports stream, and token users' API reads are never cached."""
from __future__ import annotations

import csv
import datetime
import io
import json
import math
import time
import types
from decimal import Decimal

import pytest
from django.http import JsonResponse

from leaderboard.accounts.models import ApiToken
from leaderboard.benchmarks.models import Benchmark
from leaderboard.boards import cache as page_cache
from leaderboard.boards.tasks import warm_boards
from leaderboard.exports import csv_response, csv_stream, json_stream

pytestmark = pytest.mark.django_db

BOARD = "/b/opt-synthetic/"
PAGES = [BOARD, "/b/opt-synthetic/export.csv", "/b/opt-synthetic/export.json",
         "/api/v1/benchmarks/opt-synthetic/leaderboard/", "/"]


def finish(api, finish_job, sub, loss):
    for job in sub.jobs.select_related("task"):
        finish_job(api, job, final_loss=loss)


def test_a_new_result_is_rendered_into_the_cache_before_any_visitor_asks(client, alice, bob, make_submission,
                                                                          runner_api, finish_job):
    sorted_page = "/b/opt-synthetic/?task=opt-f2&sort=submitted_at&dir=desc"
    assert client.get(sorted_page)["X-Page-Cache"] == "miss"  # a page only a visitor has read so far
    finish(runner_api, finish_job, make_submission(alice, name="alice-opt"), 0.2)
    for path in PAGES + [sorted_page]:
        response = client.get(path)
        assert response["X-Page-Cache"] == "hit", path
        assert b"alice-opt" in response.content, path
    finish(runner_api, finish_job, make_submission(bob, name="bob-opt"), 0.1)
    rows = list(csv.DictReader(io.StringIO(client.get("/b/opt-synthetic/export.csv").content.decode())))
    assert [r["name"] for r in rows] == ["bob-opt", "alice-opt"]
    assert client.get(sorted_page)["X-Page-Cache"] == "hit"
    assert b"bob-opt" in client.get(sorted_page).content


def test_visitors_get_the_previous_render_only_while_the_worker_renders(
        client, alice, bob, make_submission, runner_api, finish_job, _celery_for_tests, monkeypatch):
    finish(runner_api, finish_job, make_submission(alice, name="alice-opt"), 0.2)
    assert b"alice-opt" in client.get(BOARD).content
    sub = make_submission(bob, name="bob-opt")
    _celery_for_tests.conf.update(task_always_eager=False)  # the warm waits in the broker
    try:
        finish(runner_api, finish_job, sub, 0.1)
    finally:
        _celery_for_tests.conf.update(task_always_eager=True)
    stale = client.get(BOARD)
    assert stale["X-Page-Cache"] == "stale" and b"bob-opt" not in stale.content
    # a few seconds later the render is still not in: the visitor gets the board rendered for them
    later = time.time() + page_cache.settings.PAGE_CACHE_STALE_SECONDS + 1
    monkeypatch.setattr(page_cache, "time", types.SimpleNamespace(time=lambda: later))
    fresh = client.get(BOARD)
    assert fresh["X-Page-Cache"] == "miss" and b"bob-opt" in fresh.content
    monkeypatch.undo()
    bench = Benchmark.objects.get(slug="opt-synthetic")
    assert warm_boards([bench.pk])["hit"] >= 1  # the worker finds the board already current
    assert client.get("/")["X-Page-Cache"] == "hit" and b"bob-opt" in client.get("/").content


def test_a_board_change_without_a_warm_on_its_way_is_never_served_stale(client, alice, make_submission,
                                                                         runner_api, finish_job):
    """Rows changed outside a commit's warm (here: a test transaction, whose on_commit never runs)."""
    finish(runner_api, finish_job, make_submission(alice, name="old-name"), 0.2)
    assert b"old-name" in client.get(BOARD).content
    from leaderboard.boards.models import BoardEntry

    for entry in BoardEntry.objects.filter(benchmark__slug="opt-synthetic"):
        entry.submission_name = "new-name"
        entry.save()
    response = client.get(BOARD)
    assert response["X-Page-Cache"] == "miss" and b"new-name" in response.content


@pytest.mark.parametrize("path", PAGES)
def test_a_client_holding_the_current_render_gets_304_until_the_board_changes(
        client, alice, bob, make_submission, runner_api, finish_job, path, django_assert_num_queries):
    finish(runner_api, finish_job, make_submission(alice, name="alice-opt"), 0.2)
    time.sleep(1)  # Last-Modified goes out once the version's second is over (cache._finish)
    first = client.get(path)
    etag, modified = first["ETag"], first["Last-Modified"]
    assert "no-cache" in first["Cache-Control"] and "Authorization" in first["Vary"]
    with django_assert_num_queries(0):  # the board version comes from the cache too
        again = client.get(path, HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304 and again["ETag"] == etag and not again.content
    assert client.get(path, HTTP_IF_MODIFIED_SINCE=modified).status_code == 304
    time.sleep(0.01)  # versions carry the time in milliseconds
    finish(runner_api, finish_job, make_submission(bob, name="bob-opt"), 0.1)
    changed = client.get(path, HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200 and changed["ETag"] != etag
    assert b"bob-opt" in changed.getvalue()


@pytest.mark.parametrize("path", PAGES)
def test_a_cached_page_costs_no_query_and_a_version_read_again_one(client, alice, make_submission, runner_api,
                                                                   finish_job, path, django_assert_num_queries):
    finish(runner_api, finish_job, make_submission(alice, name="alice-opt"), 0.2)
    with django_assert_num_queries(0):  # the commit put the board's version in the cache
        assert client.get(path)["X-Page-Cache"] == "hit"
    page_cache.caches["default"].delete_many(["version:opt-synthetic", "version:*"])  # expired
    with django_assert_num_queries(1):
        assert client.get(path)["X-Page-Cache"] == "hit"


def test_exports_stream_and_the_cached_copy_is_what_streamed(client, settings, alice, make_submission, runner_api,
                                                              finish_job):
    finish(runner_api, finish_job, make_submission(alice, name="=HYPERLINK(\"x\")"), 0.2)
    settings.PAGE_CACHE_SECONDS = 0
    for fmt in ("csv", "json"):
        streamed = client.get(f"/b/opt-synthetic/export.{fmt}")
        assert streamed.streaming
        settings.PAGE_CACHE_SECONDS = 300
        cached = client.get(f"/b/opt-synthetic/export.{fmt}")
        assert cached["X-Page-Cache"] == "hit" and cached.content == streamed.getvalue()
        settings.PAGE_CACHE_SECONDS = 0
    assert "'=HYPERLINK" in client.get("/b/opt-synthetic/export.csv").getvalue().decode()


def test_streamed_csv_and_json_equal_the_documents_built_in_memory():
    header = ["name", "=cmd", "value"]
    rows = [[f"row {i}, \"quoted\"\nline", "-1+1" if i % 3 else "@SUM(A1)", i * 0.1 - 50] for i in range(5000)]
    streamed = csv_stream("board.csv", header, iter(rows))
    chunks = list(streamed.streaming_content)
    assert len(chunks) > 1  # really streamed, not one block
    assert b"".join(chunks) == csv_response("board.csv", header, rows).content
    assert streamed["Content-Disposition"] == 'attachment; filename="board.csv"'
    data = {"rows": [{"name": "é ✓", "when": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
                      "value": Decimal("1.50"), "nan": math.nan, "i": i, "nested": [None, True]} for i in range(3000)]}
    assert b"".join(json_stream(data).streaming_content) == JsonResponse(data, json_dumps_params={"indent": 1}).content
    assert json.loads(json_stream(data).getvalue())["rows"][0]["name"] == "é ✓"


def test_token_users_api_reads_are_never_cached_and_anonymous_ones_never_hold_private_rows(
        client, alice, make_submission, runner_api, finish_job):
    finish(runner_api, finish_job, make_submission(alice, name="public-opt"), 0.2)
    finish(runner_api, finish_job, make_submission(alice, name="secret-opt", visibility="private"), 0.1)
    url = "/api/v1/benchmarks/opt-synthetic/leaderboard/"
    anonymous = client.get(url)
    assert anonymous["X-Page-Cache"] == "hit" and "secret-opt" not in anonymous.content.decode()
    assert {"Accept", "Cookie", "Authorization"} <= {v.strip() for v in anonymous["Vary"].split(",")}
    token = ApiToken.issue(user=alice, name="reader")[1]
    mine = client.get(url, HTTP_AUTHORIZATION=f"Token {token}")
    assert "X-Page-Cache" not in mine and "private" in mine["Cache-Control"]
    assert "Authorization" in mine["Vary"] and "secret-opt" in mine.content.decode()
    again = client.get(url)
    assert again["X-Page-Cache"] == "hit" and "secret-opt" not in again.content.decode()
    browsable = client.get(url, HTTP_ACCEPT="text/html")
    assert "X-Page-Cache" not in browsable  # the browsable API carries a login form: never cached


def test_the_submission_page_is_cached_until_it_changes_and_its_live_part_is_polled(
        client, alice, make_submission, runner_api, finish_job, django_assert_num_queries):
    sub = make_submission(alice, name="live-opt")
    page = f"/s/{sub.pk}/"
    assert client.get(page)["X-Page-Cache"] == "miss"
    cached = client.get(page)
    assert cached["X-Page-Cache"] == "hit" and f'data-url="/s/{sub.pk}/status.json"' in cached.content.decode()
    with django_assert_num_queries(0):  # its version is kept in the cache with the page
        assert client.get(page)["X-Page-Cache"] == "hit"
    assert client.get(page, HTTP_IF_NONE_MATCH=cached["ETag"]).status_code == 304
    finish(runner_api, finish_job, sub, 0.2)  # results and a new status: a new version
    done = client.get(page)
    assert done["X-Page-Cache"] == "miss" and ">finished<" in done.content.decode()
    sub.refresh_from_db()
    sub.name = "renamed-opt"
    sub.save()
    assert b"renamed-opt" in client.get(page).content
    sub.visibility = "private"
    sub.save()
    assert client.get(page).status_code == 404
    client.force_login(alice)
    mine = client.get(page)
    assert "X-Page-Cache" not in mine and "private" in mine["Cache-Control"] and b"renamed-opt" in mine.content


def test_a_submission_page_shows_a_status_change_at_once_and_a_claim_within_the_stale_seconds(
        client, alice, make_submission, runner_api, settings, django_capture_on_commit_callbacks):
    """A job or submission saved (a result, a failure, a rename) forgets the page's kept version at
    once; a runner's claim, a conditional UPDATE no signal sees, shows once the kept version
    expires (PAGE_CACHE_STALE_SECONDS), and never later."""
    import time

    from django.core.cache import caches

    from leaderboard.boards.cache import submission_version_key
    from leaderboard.submissions.models import EvaluationJob

    settings.PAGE_CACHE_STALE_SECONDS = 1
    sub = make_submission(alice, name="claimed-opt")
    page = f"/s/{sub.pk}/"
    client.get(page)
    before = client.get(page)
    assert before["X-Page-Cache"] == "hit"
    job = sub.jobs.order_by("pk").first()
    spec = runner_api.claim(job.pk).json()["spec"]
    assert EvaluationJob.objects.get(pk=job.pk).state != "pending"
    time.sleep(1.1)
    after = client.get(page)
    assert after["X-Page-Cache"] == "miss" and after["ETag"] != before["ETag"]
    settings.PAGE_CACHE_STALE_SECONDS = 300  # from here on, only the signals can make it show
    caches[settings.PAGE_CACHE_ALIAS].delete(submission_version_key(sub.pk))  # kept again, for 300 s
    assert client.get(page)["X-Page-Cache"] == "hit"
    with django_capture_on_commit_callbacks(execute=True):
        assert runner_api.fail(job.pk, spec["attempt"], "runtime_error", "division by zero").status_code == 200
    failed = client.get(page)
    assert failed["X-Page-Cache"] == "miss" and b"division by zero" in failed.content


def test_a_commit_that_changes_many_rows_sends_one_warm_and_a_broker_down_fails_no_result(
        client, alice, make_submission, runner_api, finish_job, monkeypatch, django_capture_on_commit_callbacks):
    from leaderboard.boards import tasks
    from leaderboard.boards.models import BoardEntry

    sent = []
    monkeypatch.setattr(tasks.warm_boards, "delay", lambda ids: sent.append(ids))
    finish(runner_api, finish_job, make_submission(alice, name="many-rows"), 0.2)  # a row per task
    bench = Benchmark.objects.get(slug="opt-synthetic")
    sent.clear()
    with django_capture_on_commit_callbacks(execute=True):  # one transaction changing three rows
        for entry in BoardEntry.objects.filter(benchmark=bench):
            entry.save()
    assert BoardEntry.objects.filter(benchmark=bench).count() == 3 and sent == [[bench.pk]]

    def broker_down(ids):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(tasks.warm_boards, "delay", broker_down)
    other = make_submission(alice, name="broker-down")
    finish(runner_api, finish_job, other, 0.1)  # finish_job asserts the result was accepted
    response = client.get(BOARD)
    assert response.status_code == 200 and b"broker-down" in response.content
