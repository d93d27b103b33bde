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
