"""A visitor's browser reads cached pages gzipped: Chromium asks for gzip, the page cache answers
a hit with its gzipped copy (before the session middleware), and the browser decodes it into the
same board, charts and export a render gives."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.integration.boards.test_time_to_target import EPOCHS, finished, trained

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

READ_EXPORT = """async (url) => {
    const response = await fetch(url);
    return {encoding: response.headers.get("content-encoding"), cache: response.headers.get("x-page-cache"),
            document: await response.json()};
}"""


def test_a_visitor_reads_a_cached_board_and_its_export_gzipped(page, live_server, alice):
    finished(
        alice,
        "opt-digits",
        "zipped-adam",
        {"opt-digits": trained("opt-digits", [([90.0, 96.0, 97.5], [1.0, 2.0, 3.0], EPOCHS)])},
    )
    board = f"{live_server.url}/b/opt-digits/"
    page.goto(board)  # rendered (or warmed) once
    response = page.goto(board)
    assert response.headers["x-page-cache"] == "hit" and response.headers["content-encoding"] == "gzip"
    expect(page.locator("#board tr", has_text="zipped-adam")).to_be_visible()
    chart = page.locator("[id^='chart-']").first  # plotly draws from the decoded page's specs
    chart.scroll_into_view_if_needed()
    expect(chart.locator(".main-svg").first).to_be_visible()

    page.evaluate(READ_EXPORT, "/b/opt-digits/export.json")
    export = page.evaluate(READ_EXPORT, "/b/opt-digits/export.json")
    assert export["cache"] == "hit" and export["encoding"] == "gzip"
    assert [row["name"] for row in export["document"]["rows"]] == ["zipped-adam"]
