"""Paired tests in the browser (issue 17 item 2): a visitor reads "=1" for two digits classifiers
that differ on a handful of images, ticks both and reads McNemar's p and the paired interval."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from leaderboard.boards import paired
from leaderboard.boards.templatetags.board_tags import sig, signed
from tests.integration.boards.test_paired_ties import scored

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_visitor_reads_the_paired_tie_and_opens_the_paired_test(page, live_server, alice, bob):
    a = scored(alice, "alice-net", range(0, 20))
    b = scored(bob, "bob-net", [*range(3, 20), 100, 101, 102, 103, 104])  # b 3, c 5 against alice
    page.goto(f"{live_server.url}/b/digits/")
    expect(page.locator('#board td[data-col="rank"]')).to_have_text(["=1", "=1"])
    expect(page.locator(".tie-rules")).to_contain_text("McNemar")
    expect(page.locator(f'#board tr[data-submission="{b.pk}"] .tie')).to_have_attribute(
        "title", re.compile(r"b 3, c 5, p̃ 0\.727"))

    page.check(f'input.pick[value="{a.pk}"]')
    page.check(f'input.pick[value="{b.pk}"]')
    page.click("#compare-button")
    expect(page).to_have_url(re.compile(r"/compare/\?ids="))
    line = page.locator(f'table.paired tr[data-submission="{b.pk}"]')
    expected = paired.paired_test(*_rights(range(0, 20), [*range(3, 20), *range(100, 105)]))
    expect(line.locator('[data-col="p"]')).to_have_text(sig(expected.p, 3))
    expect(line).to_contain_text(f"[{signed(expected.ci[0])}, {signed(expected.ci[1])}]")
    expect(line).to_contain_text("not separable")
    expect(page.locator("table.paired caption")).to_contain_text("McNemar")


def _rights(wrong_reference, wrong_other):
    import numpy as np

    reference, other = np.ones(450, dtype=bool), np.ones(450, dtype=bool)
    reference[list(wrong_reference)] = False
    other[list(wrong_other)] = False
    return other, reference
