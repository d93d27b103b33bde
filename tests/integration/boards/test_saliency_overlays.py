"""Saliency overlays in the failure explorer (issue 17 item 5, the site side): the overlay PNG is
the stored map, upsampled and colour-mapped; the caption names what the runner recorded; a
malformed entry gives "no saliency" and never an error; a private submission's overlays are its
owner's only; the page's queries do not grow with the maps."""

from __future__ import annotations

import base64
import io
import re
from typing import Any

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from PIL import Image as PILImage

from leaderboard.boards import saliency_overlays
from leaderboard.submissions.models import Submission
from tests.integration.boards.test_difficulty import THUMB_EVERY, scored

pytestmark = pytest.mark.django_db
SIDE = 16
MAPPED_EVERY = 2 * THUMB_EVERY  # maps for every other thumbnailed image: the rest must show none


def saliency_entry(rows: list[int], *, seed: int = 0, **fields: Any) -> tuple[dict, np.ndarray]:
    """A format-1 saliency entry as runner/saliency_sample.py writes it for ``rows`` of a
    scored() file (unshuffled: row = image index), with random maps; (entry, maps uint8 [M, 16, 16])."""
    maps = np.random.default_rng(seed).integers(0, 256, size=(len(rows), SIDE, SIDE), dtype=np.uint8)
    entry = {
        "format": 1,
        "side": SIDE,
        "maps": base64.b64encode(maps.tobytes()).decode("ascii"),
        "rows": list(rows),
        "index": list(rows),
        "target": [0] * len(rows),
        "failure": [False] * len(rows),
        "group_key": None,
        "method": "smoothgrad",
        "layer": None,
        "params": {"copies": 16, "sigma": 0.15, "seed": 0},
        "seconds": 1.3,
        "budget_s": 2.5,
        "requested": len(rows),
        **fields,
    }
    return entry, maps


def with_saliency(sub: Submission, entry: Any) -> None:
    """Store ``entry`` as the saliency of ``sub``'s only result."""
    job = sub.jobs.get()
    job.result = {**(job.result or {}), "saliency": entry}
    job.save(update_fields=["result"])


def mapped_rows(n: int = 450) -> list[int]:
    return [r for r in range(n) if r % MAPPED_EVERY == 0]


def saliency_caption(html: str) -> str:
    found = re.search(r'<div id="saliency-caption">(.*?)</div>', html, re.S)
    assert found is not None, "the page has no saliency caption"
    return found.group(1)


def overlay_urls(html: str) -> list[str]:
    return re.findall(r'<img class="overlay slot-\d+" src="([^"]+)"', html)


def test_the_overlay_png_is_the_stored_map_upsampled_and_colour_mapped(client, alice):
    sub = scored(alice, "net-1", 1)
    rows = mapped_rows()
    entry, maps = saliency_entry(rows)
    with_saliency(sub, entry)
    html = client.get(f"/s/{sub.pk}/failures/digits/?by=label").content.decode()
    urls = overlay_urls(html)
    assert len(urls) >= 10
    job_id = sub.jobs.get().pk
    for url in urls:
        matched = re.fullmatch(rf"/s/{sub.pk}/saliency/{job_id}/(\d+)\.png", url)
        assert matched is not None, url
        position = int(matched.group(1))
        response = client.get(url)
        assert response.status_code == 200 and response["Content-Type"] == "image/png"
        assert "private" in response["Cache-Control"]
        image = PILImage.open(io.BytesIO(response.content))
        assert image.mode == "RGBA" and image.size == (64, 64)
        pixels = np.asarray(image)
        expected = np.kron(maps[position], np.ones((4, 4), dtype=np.uint8))  # nearest, 4× per side
        np.testing.assert_array_equal(255 - pixels[..., 1], expected)  # green carries the value
        assert (pixels[..., 0] == 255).all() and (pixels[..., 2] == 0).all()
        np.testing.assert_array_equal(
            pixels[..., 3], np.round(expected.astype(float) * 180 / 255).astype(np.uint8)
        )
    # every overlay sits on the thumbnail of the image its map belongs to
    for thumb, overlay in re.findall(
        r'<img class="thumb" src="[^"]+" width="64" height="64" alt="image (\d+):[^"]*">'
        r'(?:<img class="overlay slot-0" src="[^"]+/(\d+)\.png")?',
        html,
    ):
        index = int(thumb)
        if index % MAPPED_EVERY == 0:
            assert overlay and rows[int(overlay)] == index
        else:
            assert overlay == ""
    assert client.get(f"/s/{sub.pk}/saliency/{job_id}/{len(rows)}.png").status_code == 404


def test_the_caption_names_the_method_layer_parameters_and_the_runners_error(client, alice):
    sub = scored(alice, "net-1", 1)
    entry, _ = saliency_entry(
        mapped_rows(),
        method="smooth-gradcam++",
        layer="features.3",
        params={"copies": 8, "sigma": 0.25, "seed": 0, "fill": [0.5, 0.25, 0.125]},
        error="the model server ran out of memory",
    )
    with_saliency(sub, entry)
    html = client.get(f"/s/{sub.pk}/failures/digits/").content.decode()
    caption = saliency_caption(html)
    assert "Smooth Grad-CAM++" in caption and "<code>features.3</code>" in caption
    assert "copies 8" in caption and "sigma 0.25" in caption and "fill [0.5, 0.25, 0.125]" in caption
    assert "Saliency maps in 1.3 s of a 2.5 s budget" in caption and "75 maps in 1.3 s" in caption
    assert "stopped: the model server ran out of memory" in caption
    assert 'id="saliency-show-0" checked' in html and 'id="no-saliency"' not in html


@pytest.mark.parametrize(
    "damage",
    [
        {"maps": "not base64!"},
        {"maps": base64.b64encode(b"\0" * 100).decode()},  # too few bytes for the rows
        {"side": 0},
        {"side": "16"},
        {"format": 2},  # format 2 without its methods
        {"format": 3},
        {"format": True},
        {"rows": [0, 0]},
        {"rows": [0.0]},
        {"index": [1, 2]},
        {"params": ["copies", 16]},
        {"params": {"nested": {"a": 1}}},
        {"method": 3},
        {"seconds": "soon"},
    ],
)
def test_a_malformed_entry_shows_no_saliency_and_no_error(client, alice, damage):
    sub = scored(alice, "net-1", 1)
    entry, _ = saliency_entry(mapped_rows())
    with_saliency(sub, {**entry, **damage})
    response = client.get(f"/s/{sub.pk}/failures/digits/")
    assert response.status_code == 200
    html = response.content.decode()
    assert overlay_urls(html) == [] and 'id="no-saliency"' in html and "unreadable" in html
    assert len(re.findall(r'<img class="thumb"', html)) >= 10  # the explorer itself still works
    assert client.get(f"/s/{sub.pk}/saliency/{sub.jobs.get().pk}/0.png").status_code == 404


def test_an_entry_that_is_not_an_object_or_is_absent_gives_no_overlay(client, alice):
    sub = scored(alice, "net-1", 1)
    with_saliency(sub, ["maps"])
    assert "unreadable" in client.get(f"/s/{sub.pk}/failures/digits/").content.decode()
    plain = scored(alice, "net-2", 2)
    html = client.get(f"/s/{plain.pk}/failures/digits/").content.decode()
    assert 'id="no-saliency"' in html and "unreadable" not in html and overlay_urls(html) == []


def test_a_map_recorded_for_another_image_is_not_laid_over_this_one(alice):
    entry, _ = saliency_entry([3, 6], index=[3, 7])
    overlays = saliency_overlays.read({"saliency": entry})
    assert overlays is not None and overlays.position(3, 3) == 0
    assert overlays.position(6, 6) is None and overlays.position(9, 9) is None


def test_a_private_submissions_overlays_are_served_to_its_owner_only(client, alice, bob):
    hidden = scored(bob, "hidden", 3, public=False)
    entry, _ = saliency_entry(mapped_rows())
    with_saliency(hidden, entry)
    url = f"/s/{hidden.pk}/saliency/{hidden.jobs.get().pk}/0.png"
    assert client.get(url).status_code == 404
    client.force_login(alice)
    assert client.get(url).status_code == 404
    client.force_login(bob)
    response = client.get(url)
    assert response.status_code == 200 and "private" in response["Cache-Control"]
    # another submission's address cannot reach this job's maps
    mine = scored(alice, "mine", 1)
    client.force_login(alice)
    assert client.get(f"/s/{mine.pk}/saliency/{hidden.jobs.get().pk}/0.png").status_code == 404


def test_the_explorer_costs_the_same_queries_with_and_without_maps(client, alice):
    plain = scored(alice, "net-1", 1)
    mapped = scored(alice, "net-2", 2)
    entry, _ = saliency_entry(mapped_rows())
    with_saliency(mapped, entry)
    client.get(f"/s/{plain.pk}/failures/digits/")  # warm the field's summary
    with CaptureQueriesContext(connection) as without:
        client.get(f"/s/{plain.pk}/failures/digits/")
    with CaptureQueriesContext(connection) as with_maps:
        html = client.get(f"/s/{mapped.pk}/failures/digits/").content.decode()
    assert overlay_urls(html) and len(with_maps) == len(without)


def saliency_entry_v2(rows: list[int], methods: list[dict], **fields: Any) -> tuple[dict, list[np.ndarray]]:
    """A format-2 entry as runner/saliency_sample.py writes it: ``methods`` each with its
    ``rows`` (a subset of ``rows``) or ``skipped``/``error``; (entry, each method's maps)."""
    rng = np.random.default_rng(7)
    items, all_maps = [], []
    for method in methods:
        mine = method.get("rows", [])
        maps = rng.integers(0, 256, size=(len(mine), SIDE, SIDE), dtype=np.uint8)
        items.append(
            {
                "layer": None,
                "params": {},
                "seconds": 0.5,
                **method,
                "rows": mine,
                "maps": base64.b64encode(maps.tobytes()).decode("ascii"),
            }
        )
        all_maps.append(maps)
    entry = {
        "format": 2,
        "side": SIDE,
        "rows": list(rows),
        "index": list(rows),
        "target": [0] * len(rows),
        "failure": [False] * len(rows),
        "group_key": None,
        "asked": "auto",
        "methods": items,
        "seconds": 4.0,
        "budget_s": 5.0,
        "requested": len(rows),
        **fields,
    }
    return entry, all_maps


def three_methods(rows: list[int]) -> list[dict]:
    return [
        {"method": "gradcam++", "layer": "layer4", "rows": rows},
        {"method": "normgrad", "layer": "layer4", "params": {"selective": True}, "rows": rows},
        {
            "method": "smooth-gradcam++",
            "layer": "layer4",
            "params": {"copies": 20, "sigma": 0.15},
            "rows": rows[: len(rows) // 2],
        },
        {"method": "occlusion", "skipped": "occlusion was not asked"},
    ]


def test_a_format_2_entry_lays_each_methods_map_over_the_thumbnail_with_a_caption_each(client, alice):
    sub = scored(alice, "net-1", 1)
    rows = mapped_rows()
    entry, maps = saliency_entry_v2(rows, three_methods(rows))
    with_saliency(sub, entry)
    html = client.get(f"/s/{sub.pk}/failures/digits/?by=label").content.decode()
    caption = saliency_caption(html)
    assert "Saliency maps in 4.0 s of a 5.0 s budget" in caption
    for name in ("Grad-CAM++", "NormGrad", "Smooth Grad-CAM++"):
        assert f'<strong class="saliency-method">{name}</strong> at layer <code>layer4</code>' in caption
    assert "selective true" in caption and "copies 20" in caption and "sigma 0.15" in caption
    assert f"{len(rows)} maps" in caption and f"{len(rows) // 2} maps" in caption
    assert "not run: occlusion was not asked" in caption
    # the selector offers the methods that have maps, the first chosen, and none
    assert re.findall(r'<input type="radio" name="saliency-show" id="saliency-show-(\w+)"', html) == [
        "0",
        "1",
        "2",
        "none",
    ]
    assert 'id="saliency-show-0" checked' in html
    job_id = sub.jobs.get().pk
    offsets = [0, len(rows), 2 * len(rows)]
    stacks = re.findall(r'alt="image (\d+):[^"]*">((?:<img class="overlay[^>]*>)*)</span>', html)
    assert stacks
    for index, overlays in stacks:
        found = re.findall(
            rf'class="overlay slot-(\d)" src="/s/{sub.pk}/saliency/{job_id}/(\d+)\.png"[^>]*'
            r'alt="([^"]+) saliency of image',
            overlays,
        )
        slots = [int(slot) for slot, _, _ in found]
        if int(index) % MAPPED_EVERY:
            assert slots == []
            continue
        m = rows.index(int(index))
        assert slots == ([0, 1, 2] if m < len(rows) // 2 else [0, 1])
        for slot, position, name in found:
            assert (
                int(position) == offsets[int(slot)] + m
                and name == ["Grad-CAM++", "NormGrad", "Smooth Grad-CAM++"][int(slot)]
            )
    # each PNG is its method's map
    for slot in (0, 1, 2):
        response = client.get(f"/s/{sub.pk}/saliency/{job_id}/{offsets[slot]}.png")
        pixels = np.asarray(PILImage.open(io.BytesIO(response.content)))
        np.testing.assert_array_equal(255 - pixels[..., 1], np.kron(maps[slot][0], np.ones((4, 4), np.uint8)))
    total = 2 * len(rows) + len(rows) // 2
    assert client.get(f"/s/{sub.pk}/saliency/{job_id}/{total - 1}.png").status_code == 200
    assert client.get(f"/s/{sub.pk}/saliency/{job_id}/{total}.png").status_code == 404


def test_a_format_2_entry_whose_methods_all_failed_says_why_and_shows_no_overlay(client, alice):
    sub = scored(alice, "net-1", 1)
    entry, _ = saliency_entry_v2(
        [],
        [
            {
                "method": "gradcam++",
                "error": "computing saliency maps failed: ValueError: maps are not finite",
            },
            {"method": "smoothgrad", "skipped": "the model server stopped after gradcam++'s error"},
        ],
    )
    with_saliency(sub, entry)
    html = client.get(f"/s/{sub.pk}/failures/digits/").content.decode()
    assert "stopped: computing saliency maps failed: ValueError: maps are not finite" in html
    assert "not run: the model server stopped after gradcam++&#x27;s error" in html
    assert (
        overlay_urls(html) == [] and 'id="saliency-none-shown"' in html and 'name="saliency-show"' not in html
    )


def _v2_damages() -> list[tuple[str, object]]:
    return [
        ("methods", None),
        ("methods", {"gradcam++": {}}),
        ("methods", ["gradcam++"]),
        ("methods", [{"method": "gradcam++", "rows": [0], "maps": ""}] * 9),  # more than the selector's slots
        ("methods.0.rows", [1]),  # not a row of the entry's
        ("methods.0.maps", "AAAA"),
        ("methods.0.method", ["gradcam++"]),
        ("methods.0.seconds", -1),
        ("methods.0.skipped", 3),
        ("methods.0.params", {"copies": {"n": 20}}),
        ("methods.0.rows", [0, 0]),
        ("error", 7),
    ]


@pytest.mark.parametrize("where, value", _v2_damages())
def test_a_malformed_format_2_entry_shows_no_saliency_and_no_error(client, alice, where, value):
    sub = scored(alice, "net-1", 1)
    rows = mapped_rows()
    entry, _ = saliency_entry_v2(rows, three_methods(rows))
    target, *path = where.split(".")
    if path:
        entry["methods"][int(path[0])][path[1]] = value
    else:
        entry[target] = value
    with_saliency(sub, entry)
    response = client.get(f"/s/{sub.pk}/failures/digits/")
    assert response.status_code == 200
    html = response.content.decode()
    assert overlay_urls(html) == [] and 'id="no-saliency"' in html and "unreadable" in html, where
    assert client.get(f"/s/{sub.pk}/saliency/{sub.jobs.get().pk}/0.png").status_code == 404
