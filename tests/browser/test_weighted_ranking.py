"""The weighted ranking in the browser (issue 19 item 4): a reader moves a slider, the rows reorder
in the page, the address carries the weights, and reloading that address gives the same order
(rendered by the server this time)."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.integration.boards.test_weighted_and_reported import measured

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
NAMES = '#weighted tbody tr td:nth-child(2) a'


def test_moving_a_slider_reorders_and_the_address_reloads_to_the_same_order(page, live_server, alice, bob):
    # PROTOCOLS' test vector: perf (70, 80, 90), throughput (300, 200, 100), memory (2, 4, 8) of 16 GiB.
    measured(alice, "fast-net", 70, throughput=300, peak_gib=2)
    measured(bob, "middle-net", 80, throughput=200, peak_gib=4)
    measured(alice, "accurate-net", 90, throughput=100, peak_gib=8)
    page.goto(f"{live_server.url}/b/digits/weighted/")
    expect(page.locator(NAMES)).to_have_text(["accurate-net", "middle-net", "fast-net"])
    expect(page.locator('#weighted [data-col="score"]')).to_have_text(["66.11", "63.33", "59.44"])
    expect(page.locator("#dropped")).to_contain_text("parameters is not weighed")
    expect(page.locator("#apply-weights")).to_be_hidden()  # the sliders act at once; the button is for no script

    page.locator('input[name="w_performance"]').fill("0")  # speed and memory alone: the light, fast model leads
    expect(page.locator(NAMES)).to_have_text(["fast-net", "middle-net", "accurate-net"])
    expect(page.locator('#weighted [data-col="rank"]')).to_have_text(["1", "2", "3"])
    expect(page.locator('#weighted [data-col="score"]')).to_have_text(["38.33", "30.00", "18.33"])
    page.locator('input[name="w_throughput"]').fill("5")
    expect(page.locator('output[data-for="throughput"]')).to_have_text("5")
    expect(page).to_have_url(re.compile(r"/b/digits/weighted/\?w_performance=0&w_throughput=5&w_memory=1$"))
    scores = page.locator('#weighted [data-col="score"]').all_text_contents()

    page.reload()
    expect(page.locator(NAMES)).to_have_text(["fast-net", "middle-net", "accurate-net"])
    expect(page.locator('#weighted [data-col="score"]')).to_have_text(scores)  # the server sums as the page did
    expect(page.locator('input[name="w_throughput"]')).to_have_value("5")
