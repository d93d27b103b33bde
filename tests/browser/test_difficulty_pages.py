"""The hardest-images page and the failure explorer in the browser (issue 17 items 3, 4, 5): a
visitor follows the board's link, sees the hardest images with thumbnails that load, the charts,
the data-diet table, then opens a submission's failures with their thumbnails, labels and
saliency overlays: one per method the runner computed, a selector choosing which shows (or none)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.integration.boards.test_difficulty import scored
from tests.integration.boards.test_saliency_overlays import (
    mapped_rows,
    saliency_entry,
    saliency_entry_v2,
    three_methods,
    with_saliency,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _all_loaded(page: Any, selector: str) -> int:
    """How many images match ``selector``, after asserting that every one decoded (naturalWidth > 0)."""
    page.wait_for_function(f"[...document.querySelectorAll({selector!r})].every(i => i.complete)")
    widths = page.eval_on_selector_all(selector, "els => els.map(e => e.naturalWidth)")
    assert widths and all(w > 0 for w in widths), widths
    return len(widths)


def test_a_visitor_reads_the_hardest_images_and_a_submissions_failures(page, live_server, alice):
    subs = [scored(alice, f"net-{seed}", seed) for seed in (1, 2, 3, 4, 5)]
    with_saliency(subs[0], saliency_entry(mapped_rows(), method="gradcam++", layer="features.3")[0])
    page.goto(f"{live_server.url}/b/digits/?task=digits")
    page.click("#hardest-link")
    expect(page).to_have_url(re.compile(r"/b/digits/hardest/digits/$"))
    expect(page.locator("#k")).to_have_text("5")
    expect(page.locator("#provisional")).to_have_count(0)
    assert _all_loaded(page, "#hardest img.thumb") >= 5
    expect(page.locator("#chart-difficulty-label .main-svg").first).to_be_visible()
    expect(page.locator("#chart-data-diet .main-svg").first).to_be_visible()
    expect(page.locator("#data-diet tbody tr")).to_have_count(5)

    page.goto(f"{live_server.url}/s/{subs[0].pk}/")
    page.click("#failure-links a")
    expect(page).to_have_url(re.compile(rf"/s/{subs[0].pk}/failures/digits/$"))
    expect(page.locator("section.failure-group")).to_have_count(10)
    for group in page.locator("section.failure-group").all():  # every class shows failures with thumbnails
        expect(group.locator("figure.failure img.thumb").first).to_be_visible()
    assert _all_loaded(page, "figure.failure img.thumb") >= 10
    expect(page.locator("figure.failure figcaption").first).to_contain_text("true")
    expect(page.locator("figure.failure figcaption").first).to_contain_text("difficulty")
    # saliency overlays (issue 17 item 5): laid over the thumbnails, decoded, captioned, toggled
    assert _all_loaded(page, "figure.thumb-card img.overlay") >= 10
    expect(page.locator("#saliency-caption")).to_contain_text("Grad-CAM++")
    expect(page.locator("#saliency-caption")).to_contain_text("features.3")
    overlay = page.locator("figure.thumb-card img.overlay").first
    expect(overlay).to_be_visible()
    thumb_box = overlay.locator("xpath=preceding-sibling::img[@class='thumb']").bounding_box()
    assert overlay.bounding_box() == thumb_box  # exactly over its thumbnail
    page.check("#saliency-show-none")
    expect(overlay).to_be_hidden()
    page.check("#saliency-show-0")
    expect(overlay).to_be_visible()


def test_a_visitor_switches_the_explorers_overlay_between_the_methods_of_a_result(page, live_server, alice):
    sub = scored(alice, "net-1", 1)
    rows = mapped_rows()
    with_saliency(sub, saliency_entry_v2(rows, three_methods(rows))[0])
    page.goto(f"{live_server.url}/s/{sub.pk}/failures/digits/?by=label")
    for name in ("Grad-CAM++", "NormGrad", "Smooth Grad-CAM++", "not run: occlusion was not asked"):
        expect(page.locator("#saliency-methods")).to_contain_text(name)
    for slot in (0, 1, 2):
        assert _all_loaded(page, f"figure.thumb-card img.overlay.slot-{slot}") >= 5
    # the first image with a map has one overlay per method, all over its thumbnail; one shows at a time
    stack = page.locator("span.thumb-stack", has=page.locator("img.overlay.slot-2")).first
    thumb = stack.locator("img.thumb").bounding_box()
    overlays = [stack.locator(f"img.overlay.slot-{slot}") for slot in (0, 1, 2)]
    for chosen in (0, 1, 2):
        page.check(f"#saliency-show-{chosen}")
        for slot, overlay in enumerate(overlays):
            if slot == chosen:
                expect(overlay).to_be_visible()
                assert overlay.bounding_box() == thumb
            else:
                expect(overlay).to_be_hidden()
        expect(page.locator(f"label[for=saliency-show-{chosen}]")).to_have_text(
            ["Grad-CAM++", "NormGrad", "Smooth Grad-CAM++"][chosen]
        )
    page.check("#saliency-show-none")
    expect(page.locator("figure.thumb-card img.overlay:visible")).to_have_count(0)
