"""The page cache's early answer (boards/middleware.py): an anonymous visitor whose page the cache
holds gets it before the session, CSRF and authentication middleware run, byte for byte and header
for header what the view's wrapper gives; a visitor who may be logged in (a session or messages
cookie, a token) never does."""

from __future__ import annotations

import gzip
import time

import pytest
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.test import Client, override_settings

from leaderboard.accounts.models import ApiToken
from leaderboard.boards import views as board_views
from leaderboard.boards.cache import cached_answer

pytestmark = pytest.mark.django_db

EARLY = "leaderboard.boards.middleware.PageCacheMiddleware"


def finish(api, finish_job, sub, loss):
    for job in sub.jobs.select_related("task"):
        finish_job(api, job, final_loss=loss)


@pytest.fixture
def public_and_private(alice, make_submission, runner_api, finish_job):
    public = make_submission(alice, name="public-opt")
    finish(runner_api, finish_job, public, 0.2)
    finish(runner_api, finish_job, make_submission(alice, name="secret-opt", visibility="private"), 0.1)
    time.sleep(1)  # the versions' second is over: every answer carries Last-Modified (cache._finish)
    return public


def page_kinds(submission) -> dict[str, str]:
    return {
        "home": "/",
        "board": "/b/opt-synthetic/",
        "board (sorted, page 2)": "/b/opt-synthetic/?task=opt-f1&sort=submitted_at&dir=asc&offset=1",
        "submission": f"/s/{submission.pk}/",
        "export csv": "/b/opt-synthetic/export.csv",
        "export json": "/b/opt-synthetic/export.json",
        "api leaderboard": "/api/v1/benchmarks/opt-synthetic/leaderboard/",
        "optimizer profiles": "/optimizers/profiles/",
    }


def through_the_view(path: str, **extra):
    """The answer without the early one: a client whose middleware lacks it (a client loads its
    middleware at its first request)."""
    with override_settings(MIDDLEWARE=[m for m in settings.MIDDLEWARE if m != EARLY]):
        return Client().get(path, **extra)


def answered_early(response) -> bool:
    """The session middleware, below the early answer, never saw the request."""
    return not hasattr(response.wsgi_request, "session")


def headers(response) -> dict[str, str]:
    return {name.lower(): value for name, value in response.headers.items()}


def body(response) -> bytes:
    return response.getvalue() if response.streaming else response.content


@pytest.mark.parametrize("encodings", ["", "gzip, deflate, br"])
def test_every_page_kind_answered_early_is_the_same_as_the_views_answer(
    client, public_and_private, encodings
):
    for kind, path in page_kinds(public_and_private).items():
        first = client.get(path)  # the warmer rendered the boards; the rest are rendered here
        assert first.status_code == 200 and first["X-Page-Cache"] in ("hit", "miss"), kind
        body(first)  # a streamed export is stored once it has all gone out
        early = client.get(path, HTTP_ACCEPT_ENCODING=encodings)
        assert early["X-Page-Cache"] == "hit" and answered_early(early), kind
        late = through_the_view(path, HTTP_ACCEPT_ENCODING=encodings)
        assert late["X-Page-Cache"] == "hit" and not answered_early(late), kind
        assert body(early) == body(late) and b"secret-opt" not in body(early), kind
        assert headers(early) == headers(late), kind
        for name in (
            "X-Content-Type-Options",
            "Referrer-Policy",
            "X-Frame-Options",
            "ETag",
            "Vary",
            "Cache-Control",
            "Content-Length",
            "Cross-Origin-Opener-Policy",
        ):
            assert name in early, (kind, name)


def test_a_visitor_who_accepts_gzip_gets_the_same_page_gzipped_and_one_who_does_not_never(
    client, public_and_private
):
    for kind, path in page_kinds(public_and_private).items():
        plain = client.get(path)
        body(plain)
        plain = client.get(path)
        assert plain["X-Page-Cache"] == "hit" and "Content-Encoding" not in plain, kind
        zipped = client.get(path, HTTP_ACCEPT_ENCODING="gzip, deflate")
        assert zipped["Content-Encoding"] == "gzip" and gzip.decompress(zipped.content) == plain.content, kind
        assert int(zipped["Content-Length"]) == len(zipped.content) < len(plain.content), kind
        assert "Accept-Encoding" in plain["Vary"] and "Accept-Encoding" in zipped["Vary"], kind
        assert zipped["ETag"] == plain["ETag"] and zipped["ETag"].startswith("W/"), kind
        for held in (plain, zipped):  # either copy revalidates, whatever the request accepts now
            for encodings in ("", "gzip"):
                again = client.get(path, HTTP_IF_NONE_MATCH=held["ETag"], HTTP_ACCEPT_ENCODING=encodings)
                assert again.status_code == 304, (kind, encodings)
    board = "/b/opt-synthetic/"
    for refused in ("gzip;q=0", "identity", "br", "deflate", "gzip;q=nonsense", "gzipped"):
        response = client.get(board, HTTP_ACCEPT_ENCODING=refused)
        assert "Content-Encoding" not in response and b"public-opt" in response.content, refused
    for taken in ("*", "GZIP", "br;q=1.0, gzip;q=0.5", " gzip ; q=1"):
        assert client.get(board, HTTP_ACCEPT_ENCODING=taken)["Content-Encoding"] == "gzip", taken


def test_a_logged_in_user_who_accepts_gzip_gets_the_page_rendered_for_them(client, alice, public_and_private):
    client.get("/b/opt-synthetic/")
    client.force_login(alice)
    mine = client.get("/b/opt-synthetic/", HTTP_ACCEPT_ENCODING="gzip")
    assert "Content-Encoding" not in mine and b"secret-opt" in mine.content and "X-Page-Cache" not in mine


def test_a_conditional_request_is_answered_early_with_the_views_304(client, public_and_private):
    for path in page_kinds(public_and_private).values():
        etag = client.get(path)["ETag"]
        early = client.get(path, HTTP_IF_NONE_MATCH=etag)
        late = through_the_view(path, HTTP_IF_NONE_MATCH=etag)
        assert early.status_code == late.status_code == 304 and answered_early(early), path
        assert headers(early) == headers(late) and early.content == b"", path


def test_a_logged_in_user_a_token_or_a_cookie_never_gets_the_cached_page(client, alice, public_and_private):
    for path in ("/b/opt-synthetic/", "/api/v1/benchmarks/opt-synthetic/leaderboard/"):
        client.get(path)
        assert client.get(path)["X-Page-Cache"] == "hit"
    client.force_login(alice)
    for path in ("/b/opt-synthetic/", "/api/v1/benchmarks/opt-synthetic/leaderboard/"):
        mine = client.get(path)
        assert "X-Page-Cache" not in mine and b"secret-opt" in mine.content and not answered_early(mine), path
        assert "private" in mine["Cache-Control"]
    client.logout()
    token = ApiToken.issue(user=alice, name="laptop")[1]
    api = client.get("/api/v1/benchmarks/opt-synthetic/leaderboard/", HTTP_AUTHORIZATION=f"Token {token}")
    assert "X-Page-Cache" not in api and b"secret-opt" in api.content
    client.cookies["sessionid"] = "no-such-session"
    stranger = client.get("/b/opt-synthetic/")
    assert "X-Page-Cache" not in stranger and not answered_early(stranger)
    del client.cookies["sessionid"]
    client.cookies["messages"] = "anything"
    assert not answered_early(client.get("/b/opt-synthetic/"))


def test_mistaken_and_hostile_requests_are_not_answered_early(client, public_and_private):
    client.get("/b/opt-synthetic/")
    assert client.get("/b/opt-synthetic/", HTTP_HOST="evil.example").status_code == 400
    assert client.get("/b/opt-synthetic/?task=opt-f1%00").status_code == 400
    assert "X-Page-Cache" not in client.post("/b/opt-synthetic/")
    assert client.get("/b/no-such-board/").status_code == 404
    head = client.head("/b/opt-synthetic/")
    assert head.status_code == 200 and head["X-Page-Cache"] == "hit" and answered_early(head)
    browsable = client.get("/api/v1/benchmarks/opt-synthetic/leaderboard/", HTTP_ACCEPT="text/html")
    assert "X-Page-Cache" not in browsable and not answered_early(browsable)


def test_a_decorator_around_a_cached_view_is_never_skipped(rf, public_and_private, client):
    client.get("/b/opt-synthetic/")
    request = rf.get("/b/opt-synthetic/")
    assert cached_answer(request, board_views.benchmark, {"slug": "opt-synthetic"})["X-Page-Cache"] == "hit"
    guarded = login_required(board_views.benchmark)
    assert hasattr(guarded, "page_cache")  # functools.wraps copied the mark; it names the inner view
    assert cached_answer(rf.get("/b/opt-synthetic/"), guarded, {"slug": "opt-synthetic"}) is None
