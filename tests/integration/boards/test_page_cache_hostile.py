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
