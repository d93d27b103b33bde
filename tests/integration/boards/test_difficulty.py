"""Difficulty across a task's field, the data-diet view and the failure explorer (issue 17 items 3
and 4), on hand-made per-image files checked against an independent numpy computation."""
from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.db import connection
from django.test import TestCase
from django.test.utils import CaptureQueriesContext
from PIL import Image as PILImage

from leaderboard.benchmarks.models import Task
from leaderboard.boards import difficulty
from leaderboard.boards.models import BoardEntry
from leaderboard.boards.services import board_entry_upsert
from leaderboard.submissions.models import EvaluationJob, Submission
from runner.per_image_file import npz_bytes

pytestmark = pytest.mark.django_db
N = 450  # the digits task's test split
LABEL = np.arange(N, dtype=np.int64) % 10
THUMB_EVERY = 3  # every 3rd image has a thumbnail: all ten classes get some


def model_outcomes(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(el2n [N], pred [N]) of a made-up model, in image-index order: wrong where its el2n is high."""
    rng = np.random.default_rng(seed)
    el2n = np.sqrt(2) * rng.uniform(0.0, 1.0, N) ** (1 + seed % 3)
    pred = np.where(el2n > 0.9, (LABEL + 1 + seed % 9) % 10, LABEL)
    return el2n, pred


def outcomes_file(el2n: np.ndarray, pred: np.ndarray, *, shuffle: int | None = None, thumbs: bool = True,
                  **groups: np.ndarray) -> bytes:
    """A per-image .npz as the runner writes it, its rows optionally shuffled, with a thumbnail for
    every THUMB_EVERY-th image (each thumbnail a flat colour that encodes its image index)."""
    arrays = {"index": np.arange(N, dtype=np.int64), "label": LABEL, "pred": pred.astype(np.int64),
              "top5_hit": np.ones(N, dtype=bool), "loss": np.full(N, 0.1), "el2n": el2n, **groups}
    if shuffle is not None:
        order = np.random.default_rng(shuffle).permutation(N)
        arrays = {k: v[order] for k, v in arrays.items()}
    if thumbs:
        rows = np.flatnonzero(arrays["index"] % THUMB_EVERY == 0)
        arrays["thumb_row"] = rows.astype(np.int64)
        colour = np.stack([arrays["index"][rows] % 256, arrays["index"][rows] // 256, np.full(rows.size, 7)], 1)
        arrays["thumb"] = np.broadcast_to(colour[:, None, None, :], (rows.size, 8, 8, 3)).astype(np.uint8).copy()
    return npz_bytes(arrays)


def scored(owner, name: str, seed: int, *, public: bool = True, shuffle: int | None = None,
           outcomes: bool = True, synthetic: bool = False, task_slug: str = "digits",
           groups: dict[str, np.ndarray] | None = None) -> Submission:
    """A finished digits submission on the board, its top-1 from the made-up model's predictions."""
    task = Task.objects.select_related("benchmark").get(slug=task_slug)
    el2n, pred = model_outcomes(seed)
    sub = Submission.objects.create(
        owner=owner, benchmark=task.benchmark, name=name, artifact=f"x/{name}.pt2", artifact_name="m.pt2",
        artifact_sha256="0" * 64, artifact_size=1, status=Submission.Status.FINISHED,
        visibility=Submission.Visibility.PUBLIC if public else Submission.Visibility.PRIVATE)
    top1 = 100.0 * float(np.mean(pred == LABEL))
    job = EvaluationJob.objects.create(submission=sub, task=task, state=EvaluationJob.State.SUCCEEDED,
                                       result_attempt=1,
                                       result={"metrics": {"top1": top1}, "ci95": {"top1": [top1 - 2, top1 + 2]},
                                               "files": {"per_image": {"n": N}} if outcomes else {},
                                               **({"env": {"synthetic_data": True}} if synthetic else {})})
    with TestCase.captureOnCommitCallbacks(execute=True):  # the commit's tie refresh, inline
        if outcomes:
            job.per_image.save("outcomes.npz",
                               ContentFile(outcomes_file(el2n, pred, shuffle=shuffle, **(groups or {}))))
        board_entry_upsert(job=job, submission=sub)
    return sub


def digits() -> Task:
    return Task.objects.select_related("benchmark").get(slug="digits")


def test_the_hardest_images_are_the_mean_el2n_over_public_models_computed_independently(alice, bob):
    seeds = [1, 2, 3, 4, 5, 6]
    for seed in seeds:
        scored(alice, f"net-{seed}", seed, shuffle=seed)  # every file lists the images in its own order
    scored(bob, "hidden", 99, public=False)  # private: not part of the field
    scored(bob, "no-file", 98, outcomes=False)
    summary = difficulty.task_difficulty(digits())
    el2n = np.stack([model_outcomes(s)[0] for s in seeds])
    wrong = np.stack([model_outcomes(s)[1] != LABEL for s in seeds]).mean(axis=0)
    mean = el2n.mean(axis=0)
    expected = np.argsort(-mean, kind="stable")[:difficulty.HARDEST]
    assert summary["k"] == 6 and not summary["provisional"]
    assert [row["keys"]["index"] for row in summary["hardest"]] == expected.tolist()
    np.testing.assert_allclose([row["difficulty"] for row in summary["hardest"]], mean[expected])
    np.testing.assert_allclose([row["wrong"] for row in summary["hardest"]], wrong[expected])
    for row in summary["hardest"]:
        low, high = row["ci"]
        models = el2n[:, row["keys"]["index"]]  # the interval is computed from float32 copies
        assert models.min() - 1e-6 <= low <= high <= models.max() + 1e-6 and high - low > 0.01
    # the interval over models against a literal bootstrap of the models (another seed, more draws)
    rng = np.random.default_rng(12345)
    for row in summary["hardest"][:5]:
        models = el2n[:, row["keys"]["index"]]
        means = models[rng.integers(0, len(seeds), size=(20_000, len(seeds)))].mean(axis=1)
        np.testing.assert_allclose(row["ci"], np.percentile(means, [2.5, 97.5]), atol=0.02)
    by_class = {s["value"]: s for s in summary["groups"]["label"]}
    for c in range(10):
        assert by_class[c]["mean"] == pytest.approx(mean[LABEL == c].mean())
        assert by_class[c]["median"] == pytest.approx(np.median(mean[LABEL == c]))
        assert by_class[c]["wrong"] == pytest.approx(wrong[LABEL == c].mean())
    # each listed image's thumbnail comes from a public member's file and is that very image
    for row in summary["hardest"]:
        if row["keys"]["index"] % THUMB_EVERY == 0:
            sid, job_id, position = row["thumb"]
            assert Submission.objects.get(pk=sid).visibility == "public"
            job = EvaluationJob.objects.get(pk=job_id)
            with job.per_image.open("rb") as fh:
                got = np.load(io.BytesIO(fh.read()))
            assert got["index"][got["thumb_row"][position]] == row["keys"]["index"]
        else:
            assert row["thumb"] is None


def test_the_data_diet_ranking_at_zero_is_the_boards_and_elsewhere_matches_numpy(alice):
    seeds = [1, 2, 3, 4, 5]
    subs = [scored(alice, f"net-{seed}", seed) for seed in seeds]
    summary = difficulty.task_difficulty(digits())
    board = list(BoardEntry.objects.filter(task=digits(), is_public=True).order_by("-value", "pk")
                 .values_list("submission_id", flat=True))
    members = [m[0] for m in summary["members"]]
    assert members == board
    x0 = summary["diet"][0]
    assert x0["percent"] == 0 and x0["kept"] == N
    assert [members[i] for i in np.argsort(x0["rank"], kind="stable")] == board
    right = {s.pk: model_outcomes(seed)[1] == LABEL for s, seed in zip(subs, seeds, strict=True)}
    mean = np.stack([model_outcomes(s)[0] for s in seeds]).mean(axis=0)
    for diet in summary["diet"]:
        kept = np.argsort(mean, kind="stable")[diet["percent"] * N // 100:]
        top1 = [100.0 * right[sid][kept].mean() for sid in members]
        np.testing.assert_allclose(diet["top1"], top1)
        assert diet["rank"] == [1 + sum(t > mine for t in top1) for mine in top1]


def test_the_pages_cost_constant_queries_and_the_summary_is_cached(client, alice):
    for seed in (1, 2):
        scored(alice, f"net-{seed}", seed)
    url = "/b/digits/hardest/digits/"
    with CaptureQueriesContext(connection) as few:
        assert client.get(url).status_code == 200
    for seed in (3, 4, 5, 6):
        scored(alice, f"net-{seed}", seed)
    with CaptureQueriesContext(connection) as many:
        html = client.get(url).content.decode()
    assert len(many) == len(few)
    assert 'id="k">6<' in html and 'id="provisional"' not in html and "95% interval" in html
    with CaptureQueriesContext(connection) as again:
        client.get(url)
    assert len(again) == len(many) - 2  # the summary comes from the cache: no outcome vectors read


def test_two_models_are_shown_as_provisional_without_intervals(client, alice):
    scored(alice, "net-1", 1)
    scored(alice, "net-2", 2)
    html = client.get("/b/digits/hardest/digits/").content.decode()
    assert 'id="provisional"' in html and "95% interval" not in html
    assert all(row["ci"] is None for row in difficulty.task_difficulty(digits())["hardest"])


def test_the_failure_explorer_groups_by_class_with_labels_and_field_difficulty(client, alice):
    subs = [scored(alice, f"net-{seed}", seed) for seed in (1, 2, 3)]
    el2n, pred = model_outcomes(1)
    response = client.get(f"/s/{subs[0].pk}/failures/digits/?by=label")
    assert response.status_code == 200
    groups = response.context["groups"]
    assert {g["value"] for g in groups} == set(range(10))
    mean = np.stack([model_outcomes(s)[0] for s in (1, 2, 3)]).mean(axis=0)
    for group in groups:
        here = LABEL == group["value"]
        assert group["n"] == here.sum() and group["errors"] == (pred[here] != LABEL[here]).sum()
        shown = group["failures"] + group["successes"]
        sampled_wrong = [i for i in np.flatnonzero(here & (pred != LABEL)) if i % THUMB_EVERY == 0]
        assert len(group["failures"]) == min(16, len(sampled_wrong))
        for item in shown:
            assert item["index"] % THUMB_EVERY == 0 and item["label"] == LABEL[item["index"]] == int(item["label_name"])
            assert item["pred"] == pred[item["index"]]
            assert item["difficulty"] == pytest.approx(mean[item["index"]])
            assert item["el2n"] == pytest.approx(el2n[item["index"]])
        assert len(group["successes"]) <= 4
    assert client.get(f"/s/{subs[0].pk}/failures/digits/?by=region").status_code == 404


def test_thumbnails_are_pngs_and_a_private_submissions_are_served_to_its_owner_only(client, alice, bob):
    hidden = scored(bob, "hidden", 3, public=False)
    job = hidden.jobs.get()
    url = f"/s/{hidden.pk}/thumbs/{job.pk}/0.png"
    assert client.get(url).status_code == 404
    client.force_login(alice)
    assert client.get(url).status_code == 404
    assert client.get(f"/s/{hidden.pk}/failures/digits/").status_code == 404
    client.force_login(bob)
    response = client.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert "private" in response["Cache-Control"]
    image = np.asarray(PILImage.open(io.BytesIO(response.content)))
    assert image.shape == (8, 8, 3) and (image[..., 2] == 7).all() and (image[..., 0] == 0).all()  # image 0
    assert client.get(f"/s/{hidden.pk}/thumbs/{job.pk}/{N}.png").status_code == 404


def test_a_thumbnail_decodes_as_the_png_the_site_serves():
    rng = np.random.default_rng(0)
    thumb = rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    png = difficulty.thumbnail_png({"thumb": thumb}, 2)
    np.testing.assert_array_equal(np.asarray(PILImage.open(io.BytesIO(png)).convert("RGB")), thumb[2])
    assert difficulty.thumbnail_png({"thumb": thumb}, 3) is None and difficulty.thumbnail_png({}, 0) is None


def test_a_file_of_other_images_gets_no_field_difficulty_in_the_explorer(client, alice):
    scored(alice, "net-1", 1)
    other = scored(alice, "net-2", 2, public=False)
    job = other.jobs.get()
    el2n, pred = model_outcomes(2)
    with job.per_image.open("rb") as fh:
        arrays = dict(np.load(io.BytesIO(fh.read())))
    arrays["index"] = arrays["index"] + 1000  # not the images the field was scored on
    job.per_image.save("other.npz", ContentFile(npz_bytes(arrays)))
    client.force_login(alice)
    groups = client.get(f"/s/{other.pk}/failures/digits/").context["groups"]
    items = [item for g in groups for item in g["failures"] + g["successes"]]
    assert items and all(item["difficulty"] is None and item["field_wrong"] is None for item in items)
    assert [item["el2n"] for item in items] == pytest.approx([el2n[item["index"] - 1000] for item in items])


def test_the_hardest_page_is_for_classifier_tasks_and_says_when_no_outcomes_exist(client, alice):
    assert client.get("/b/opt-synthetic/hardest/opt-f1/").status_code == 404
    assert client.get("/b/digits/hardest/no-such-task/").status_code == 404
    scored(alice, "no-file", 1, outcomes=False)
    html = client.get("/b/digits/hardest/digits/").content.decode()
    assert 'id="no-outcomes"' in html
    assert "/b/digits/hardest/digits/" in client.get("/b/digits/?task=digits").content.decode()


def test_results_on_synthetic_data_are_labelled_on_both_pages(client, alice):
    real = scored(alice, "real", 1)
    fake = scored(alice, "fake", 2, synthetic=True)
    assert 'id="synthetic"' not in client.get(f"/s/{real.pk}/failures/digits/").content.decode()
    assert 'id="synthetic"' in client.get(f"/s/{fake.pk}/failures/digits/").content.decode()
    html = client.get("/b/digits/hardest/digits/").content.decode()
    assert 'id="synthetic"' in html and html.count("synthetic data</span>") == 1


def test_a_corruption_task_is_ranked_by_image_and_cell_and_grouped_by_corruption(client, alice):
    """On a -C task an image is its (corruption, severity, index): the same index under two
    corruptions is two images, and the explorer offers the corruption grouping."""
    corruption = np.array(["fog", "snow", "blur"])[np.arange(N) % 3]
    severity = (np.arange(N) // 3) % 5 + 1
    groups = {"corruption": corruption, "severity": severity.astype(np.int64)}
    for seed in (1, 2):
        scored(alice, f"net-{seed}", seed, task_slug="cifar10-c", groups=groups, shuffle=seed)
    summary = difficulty.task_difficulty(Task.objects.get(slug="cifar10-c"))
    mean = np.stack([model_outcomes(s)[0] for s in (1, 2)]).mean(axis=0)
    top = summary["hardest"][0]
    i = int(np.argmax(mean))
    assert top["keys"] == {"corruption": corruption[i], "severity": int(severity[i]), "index": i}
    assert top["groups"] == {"corruption": corruption[i], "severity": int(severity[i])}
    by_corruption = {s["value"]: s["mean"] for s in summary["groups"]["corruption"]}
    assert by_corruption == pytest.approx({c: mean[corruption == c].mean() for c in ("fog", "snow", "blur")})
    sub = Submission.objects.get(name="net-1")
    html = client.get("/b/cifar10/hardest/cifar10-c/").content.decode()
    assert "<th>severity</th>" in html and "<th>corruption</th>" in html
    page = client.get(f"/s/{sub.pk}/failures/cifar10-c/?by=corruption")
    assert [g["value"] for g in page.context["groups"]] and {g["value"] for g in page.context["groups"]} == {
        "fog", "snow", "blur"}
    assert all(item["label_name"] in difficulty.CLASS_NAMES["cifar10"] for g in page.context["groups"]
               for item in g["failures"])
