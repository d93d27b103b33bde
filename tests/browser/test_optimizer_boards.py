"""An optimizer training board and the profiles page in a real browser: the time-to-target charts
and the performance profiles render (plotly draws them, no console error), and the table shows
the target and the times a reader compares."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.integration.boards.test_time_to_target import EPOCHS, REFERENCE, finished, trained

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_visitor_reads_time_to_target_on_a_training_board_and_the_profiles_page(page, live_server, alice,
                                                                                   django_user_model):
    maintainers = django_user_model.objects.create_user("baselines")
    finished(maintainers, "opt-digits", "Adam", {"opt-digits": trained("opt-digits", [
        ([90.0, 96.0, 95.0], [1.0, 2.0, 3.0], EPOCHS), ([97.0, 98.0, 98.0], [1.5, 3.0, 4.5], EPOCHS),
        ([93.0, 97.0, 96.0], [2.0, 4.0, 6.0], EPOCHS)])}, family=REFERENCE, baseline=True)
    finished(alice, "opt-digits", "fast", {"opt-digits": trained("opt-digits", [
        ([97.5, 98.0], [0.5, 1.0], [500, 1000]), ([90.0, 91.0], [0.5, 1.0], [500, 1000])])})

    page.goto(f"{live_server.url}/b/opt-digits/")
    expect(page.locator("#target-rule")).to_have_text("test_top1 ≥ 97")
    expect(page.locator("#target-source")).to_have_text("median best of Adam over 3 seeds")
    for name in ("target-curve", "time-to-target"):
        chart = page.locator(f"#chart-{name}")
        chart.scroll_into_view_if_needed()
        expect(chart.locator(".main-svg").first).to_be_visible()
    # the target line is drawn, and the one seed of two that never reached it makes fast's median ∞
    expect(page.locator("#chart-target-curve .shapelayer path")).to_have_count(1)
    expect(page.locator("#chart-time-to-target")).to_contain_text("not reached")
    fast = page.locator("#board tr", has_text="fast")
    expect(fast.locator('[data-col="time-to-target"]')).to_have_text("not reached")

    page.goto(f"{live_server.url}/optimizers/profiles/")
    for name in ("profiles", "profiles-samples"):
        expect(page.locator(f"#chart-{name} .main-svg").first).to_be_visible()
    expect(page.locator('#scores-seconds tr[data-optimizer="Adam"] td.primary')).not_to_have_text("0.0000")
