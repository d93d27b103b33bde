"""Hostile and mistaken requests against the visitors' page cache (boards/cache.py and its early
answer, boards/middleware.py): what one visitor sends never changes the page another gets."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db

BOARD = "/b/opt-synthetic/"
API = "/api/v1/benchmarks/opt-synthetic/leaderboard/"


def test_a_visitors_unread_or_repeated_parameters_never_reach_the_page_others_get(client, catalogue):
    """The board echoed the whole query string into its export and paging links, while the cache
    key holds only the parameters the board reads: the first visitor's junk was every visitor's."""
    first = client.get(BOARD + "?utm_source=EVIL&task=opt-f1&task=opt-f2")
    assert first["X-Page-Cache"] == "miss" and b"EVIL" not in first.content
    assert b'export.json?task=opt-f2"' in first.content  # the last of a repeated key, as the board reads
    second = client.get(BOARD + "?task=opt-f2")
    assert second["X-Page-Cache"] == "hit" and second.content == first.content


@pytest.mark.parametrize("accept", ["text/*", "TEXT/HTML", "*/html", "image/png, Text/Html"])
def test_an_api_read_asking_for_html_in_any_spelling_never_fills_the_json_entry(client, catalogue, accept):
    """DRF's browsable API answered these with HTML (carrying a CSRF token), which was stored under
    the JSON key: every JSON client then got that HTML until the entry expired."""
    browsable = client.get(API, HTTP_ACCEPT=accept)
    assert browsable["Content-Type"].startswith("text/html") and "X-Page-Cache" not in browsable
    plain = client.get(API)
    assert plain["Content-Type"] == "application/json" and plain["X-Page-Cache"] == "miss"
    assert client.get(API, HTTP_ACCEPT=accept)["Content-Type"].startswith("text/html")  # not the JSON hit


def test_a_page_that_used_a_csrf_token_is_never_stored(client, catalogue, monkeypatch):
    """The CSRF cookie is set by the middleware after the view's wrapper returns, so the wrapper
    must see the token's use itself: here the browsable API (?format=api) with the JSON-only check
    switched off, as a future page with a form would be."""
    from leaderboard.boards import cache as page_cache

    monkeypatch.setattr(page_cache, "_wants_json", lambda request: True)
    response = client.get(API + "?format=api")
    assert response["Content-Type"].startswith("text/html") and "csrftoken" in response.cookies
    assert "X-Page-Cache" not in response
    assert "X-Page-Cache" not in client.get(API + "?format=api")


def body(response) -> bytes:
    return response.getvalue() if response.streaming else response.content


HIDDEN_PAGES = ["/", BOARD, API, "/b/opt-synthetic/export.csv", "/b/opt-synthetic/export.json"]


def test_a_submission_made_private_is_never_served_from_a_render_before_it(
    client,
    alice,
    make_submission,
    runner_api,
    finish_job,
    _celery_for_tests,
    django_capture_on_commit_callbacks,
):
    """The previous render, served while the site worker renders the new one, showed the row that
    was just made private (home, board, API, exports), and a later change's warm let an entry
    from before the change out again."""
    from leaderboard.benchmarks.models import Benchmark
    from leaderboard.boards.services import board_entries_refresh_submission

    secret = make_submission(alice, name="soon-secret")
    for job in secret.jobs.select_related("task"):
        finish_job(runner_api, job, final_loss=0.2)
    for path in HIDDEN_PAGES:
        assert b"soon-secret" in body(client.get(path)), path
    _celery_for_tests.conf.update(task_always_eager=False)  # the worker's warms wait in the broker
    try:
        with django_capture_on_commit_callbacks(execute=True):
            secret.visibility = "private"
            secret.save()
            board_entries_refresh_submission(submission=secret)
        for path in HIDDEN_PAGES[:2]:
            answer = client.get(path)
            assert answer.get("X-Page-Cache") != "stale" and b"soon-secret" not in body(answer), path
        with django_capture_on_commit_callbacks(execute=True):
            Benchmark.objects.get(slug="opt-synthetic").save()  # a later change, whose warm waits too
    finally:
        _celery_for_tests.conf.update(task_always_eager=True)
    for path in HIDDEN_PAGES:
        answer = client.get(path)
        assert answer.get("X-Page-Cache") != "stale" and b"soon-secret" not in body(answer), path


def test_a_deleted_submission_is_never_served_from_a_render_before_its_deletion(
    client,
    alice,
    make_submission,
    runner_api,
    finish_job,
    _celery_for_tests,
    django_capture_on_commit_callbacks,
):
    gone = make_submission(alice, name="soon-gone")
    for job in gone.jobs.select_related("task"):
        finish_job(runner_api, job, final_loss=0.2)
    for path in HIDDEN_PAGES[1:]:
        assert b"soon-gone" in body(client.get(path)), path
    _celery_for_tests.conf.update(task_always_eager=False)  # the worker's warms wait in the broker
    try:
        with django_capture_on_commit_callbacks(execute=True):
            gone.delete()
    finally:
        _celery_for_tests.conf.update(task_always_eager=True)
    for path in HIDDEN_PAGES[1:]:
        answer = client.get(path)
        assert answer.get("X-Page-Cache") != "stale" and b"soon-gone" not in body(answer), path


def test_a_rerun_or_deleted_submission_leaves_the_home_pages_leaders(
    client, alice, bob, make_submission, runner_api, finish_job, django_capture_on_commit_callbacks
):
    """The home page's leaders were refreshed only by a row's upsert or edit: a rerun's or a
    deleted submission's row left its board but stayed a leader, rendered afresh or not."""
    from leaderboard.submissions.services import submission_rerun

    rerun, gone = make_submission(alice, name="rerun-opt"), make_submission(bob, name="gone-opt")
    for sub in (rerun, gone):
        for job in sub.jobs.select_related("task"):
            finish_job(runner_api, job, final_loss=0.2)
    assert b"rerun-opt" in client.get("/").content and b"gone-opt" in client.get("/").content
    with django_capture_on_commit_callbacks(execute=True):
        submission_rerun(submission_id=rerun.pk)
    assert b"rerun-opt" not in client.get("/").content and b"gone-opt" in client.get("/").content
    with django_capture_on_commit_callbacks(execute=True):
        gone.delete()
    home = client.get("/")
    assert b"gone-opt" not in home.content
    assert b"gone-opt" not in client.get("/", HTTP_AUTHORIZATION="Token none").content  # rendered afresh


def test_a_submission_pages_permalink_follows_each_visitors_scheme_and_host(
    client, alice, make_submission, settings
):
    """The permalink shows the request's scheme and host; the cache keyed the page on the host
    alone, so behind a TLS proxy one plain-http request put http:// in every visitor's permalink."""
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    sub = make_submission(alice, name="linked-opt")
    page = f"/s/{sub.pk}/"
    plain = client.get(page, HTTP_X_FORWARDED_PROTO="http", HTTP_HOST="testserver")
    assert f"http://testserver{page}".encode() in plain.content
    secure = client.get(page, HTTP_X_FORWARDED_PROTO="https", HTTP_HOST="testserver")
    assert b">https://testserver" in secure.content and b">http://" not in secure.content
    assert client.get(page, HTTP_X_FORWARDED_PROTO="https", HTTP_HOST="testserver")["X-Page-Cache"] == "hit"
    other = client.get(page, HTTP_X_FORWARDED_PROTO="https", HTTP_HOST="localhost")
    assert b">https://localhost" in other.content


@pytest.mark.parametrize("path", [BOARD, "/b/opt-synthetic/export.csv", API])
def test_a_page_sent_within_its_versions_second_carries_no_last_modified(client, catalogue, path):
    """Last-Modified has whole seconds and versions milliseconds: a page sent in the second S its
    version was made in said Last-Modified S, a second change in S kept that date, and a client
    asking If-Modified-Since S got a 304 and kept the old board (wget -N, curl -z). Last-Modified
    now goes out once S is over, when any later version lies in a later second."""
    import math
    import time

    from leaderboard.benchmarks.models import Benchmark, board_version_time

    bench = Benchmark.objects.get(slug="opt-synthetic")
    checked = 0
    while checked < 3:
        bench.save()
        first = client.get(path)
        body(first)
        made = board_version_time(Benchmark.objects.get(pk=bench.pk).board_version)
        if time.time() < math.floor(made) + 1:  # still the version's second after the answer
            assert not first.has_header("Last-Modified") and first.has_header("ETag")
            checked += 1
    time.sleep(1.01)
    settled = client.get(path)
    body(settled)
    modified = settled["Last-Modified"]
    assert client.get(path, HTTP_IF_MODIFIED_SINCE=modified).status_code == 304  # the same version
    bench.save()  # a new version, in a later second than the page went out
    assert client.get(path, HTTP_IF_MODIFIED_SINCE=modified).status_code == 200


def test_a_crawler_varying_query_values_holds_a_bounded_number_of_pages(client, settings, catalogue):
    """Every value of a parameter the key holds (?offset=, ?family=, a task slug that does not
    exist) stored one more page for PAGE_CACHE_SECONDS: 400 requests left 800 entries (page and
    gzip copy) in each process's cache, without bound but memory. A page that leaves the scope's
    recent list now leaves the cache."""
    from django.core.cache import caches

    from leaderboard.boards import cache as page_cache

    cache = caches[settings.PAGE_CACHE_ALIAS]
    for i in range(3 * page_cache.MAX_RECENT_PAGES):
        body(client.get(f"{BOARD}export.csv?offset={i}"))
        client.get(f"{BOARD}?task=junk{i}&family=f%C3%A9{i}")
    pages = [key for key in cache._cache if ":page:" in key]
    assert len(pages) <= 2 * page_cache.MAX_RECENT_PAGES + 4
    assert client.get(f"{BOARD}?task=junk{i}&family=f%C3%A9{i}")["X-Page-Cache"] == "hit"  # the latest kept
    assert client.get(f"{BOARD}export.csv?offset=0")["X-Page-Cache"] == "miss"  # the oldest gone


def test_the_key_of_a_remembered_path_is_the_key_of_its_request(rf):
    from leaderboard.boards import cache as page_cache

    request = rf.get("/b/caf%C3%A9/?task=a&task=b&junk=1&family=x%20y&sort=", HTTP_HOST="testserver")
    assert page_cache._path_key("s", request.get_full_path()) == page_cache.page_key(request, "s")
