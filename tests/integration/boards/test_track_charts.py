"""Track-specific charts: corruption heatmaps, regions and maps, effective robustness, the
progress gap, training curves with seed bands and published references (performance profiles: test_time_to_target.py)."""
from __future__ import annotations

import json

import pytest
from django.utils import timezone

from leaderboard.benchmarks.models import Benchmark, Task
from leaderboard.boards.services import board_entry_upsert
from leaderboard.submissions.models import EvaluationJob, Submission
from runner.spec import make_result

pytestmark = pytest.mark.django_db


def finished(owner, benchmark: str, name: str, results: dict[str, dict], *, baseline=False) -> Submission:
    """A finished submission whose jobs carry these result documents, on the boards."""
    bench = Benchmark.objects.get(slug=benchmark)
    sub = Submission.objects.create(owner=owner, benchmark=bench, name=name, artifact=f"x/{name}",
                                    artifact_name="m.pt", artifact_sha256="0" * 64, artifact_size=1,
                                    status=Submission.Status.FINISHED, is_baseline=baseline)
    for slug, doc in results.items():
        job = EvaluationJob.objects.create(submission=sub, task=Task.objects.get(slug=slug), state="succeeded",
                                           attempt=1, result=doc, result_attempt=1, finished_at=timezone.now())
        board_entry_upsert(job=job, submission=sub)
    return sub


def chart(html: str, name: str) -> dict:
    start = html.index(f'<script id="{name}" type="application/json">') + len(f'<script id="{name}" type="application/json">')
    return json.loads(html[start:html.index("</script>", start)])


def test_a_corruption_result_shows_a_heatmap_of_corruption_by_severity(client, alice, catalogue):
    per = {"gaussian_noise": {str(s): 90.0 - 5 * s for s in range(1, 6)}, "fog": {str(s): 80.0 - s for s in range(1, 6)}}
    doc = make_result("cifar10-c", {"top1": 70.0, "corruption_error": 30.0}, breakdown={"per_corruption": per})
    sub = finished(alice, "cifar10", "robust", {"cifar10": make_result("cifar10", {"top1": 94.0, "top5": 99.0}),
                                                "cifar10-c": doc})
    fig = chart(client.get(f"/s/{sub.pk}/").content.decode(), "corruptions-cifar10-c")
    heat = fig["data"][0]
    assert heat["y"] == ["gaussian_noise", "fog"] and heat["z"][0] == [85.0, 80.0, 75.0, 70.0, 65.0]


def test_a_shift_board_plots_in_distribution_against_shifted_accuracy_with_a_fit_over_baselines(client, alice, catalogue):
    for i, (clean, shifted, base) in enumerate([(90, 60, True), (94, 68, True), (92, 75, False)]):
        finished(alice, "cifar10", f"m{i}", {"cifar10": make_result("cifar10", {"top1": clean, "top5": 99.0}),
                                             "cifar10-c": make_result("cifar10-c", {"top1": shifted,
                                                                                    "corruption_error": 100 - shifted})},
                 baseline=base)
    fig = chart(client.get("/b/cifar10/?task=cifar10-c").content.decode(), "effective-robustness")
    fit = next(t for t in fig["data"] if t["mode"] == "lines")
    assert "slope 2.00" in fit["name"]  # through the two baselines: (90, 60) and (94, 68)
    assert fit["y"] == pytest.approx([60.0, 68.0])
    submissions = next(t for t in fig["data"] if t["name"] == "submissions")
    assert submissions["x"] == [92] and submissions["y"] == [75]


def geo_result(slug: str, regions: dict[str, float], **extra) -> dict:
    per_region = {r: {"top1": v, "top5": v + 10, "n": 10, "ci95": {"top1": [v - 3, v + 3], "top5": [v, v + 12]}}
                  for r, v in regions.items()}
    values = list(regions.values())
    metrics = {"top1": sum(values) / len(values), "top5": 90.0, "worst_region_top1": min(values),
               "disparity": max(values) - min(values), "gap_europe_africa": 0.0, **extra}
    breakdown = {"per_region": per_region}
    if slug == "dollarstreet":
        metrics["income_gap"] = 20.0
        breakdown["per_income"] = {q: {"top1": 50 + 5 * i, "n": 5, "income_usd_month": "x",
                                        "ci95": {"top1": [45 + 5 * i, 55 + 5 * i]}} for i, q in enumerate(["q1", "q2", "q3", "q4"])}
    return make_result(slug, metrics, breakdown=breakdown)


def test_a_geographic_result_shows_region_bars_a_world_map_and_income(client, alice, catalogue):
    sub = finished(alice, "imagenet", "geo-model", {
        "geode": geo_result("geode", {"Africa": 60.0, "Europe": 80.0, "EastAsia": 70.0}),
        "dollarstreet": geo_result("dollarstreet", {"Africa": 40.0, "The Americas": 55.0, "Asia": 50.0, "Europe": 65.0}),
    })
    html = client.get(f"/s/{sub.pk}/").content.decode()
    bars = chart(html, "regions-geode")["data"][0]
    assert bars["x"] == ["Africa", "EastAsia", "Europe"] and bars["error_y"]["array"] == [3.0, 3.0, 3.0]
    world = chart(html, "map-geode")["data"][0]
    assert world["type"] == "choropleth" and "Nigeria" in world["locations"]
    assert world["z"][world["locations"].index("France")] == 80.0
    ds_map = chart(html, "map-dollarstreet")["data"][0]
    assert ds_map["z"][ds_map["locations"].index("Peru")] == 55.0  # "The Americas" as the metadata spells it
    income = chart(html, "income-dollarstreet")["data"][0]
    assert income["y"] == [50, 55, 60, 65]


def test_the_geographic_board_draws_the_progress_gap_from_the_platforms_own_submissions(client, alice, catalogue):
    for i, (inet, geo) in enumerate([(70.0, {"Africa": 50.0, "Europe": 70.0}), (80.0, {"Africa": 55.0, "Europe": 80.0})]):
        finished(alice, "imagenet", f"net{i}", {"imagenet-val": make_result("imagenet-val", {"top1": inet, "top5": 95.0}),
                                                "geode": geo_result("geode", geo)})
    html = client.get("/b/imagenet/?task=geode").content.decode()
    top1 = chart(html, "progress-gap-top1")
    points = next(t for t in top1["data"] if t["mode"] == "markers")
    assert sorted(zip(points["x"], points["y"], strict=True)) == [(70.0, 60.0), (80.0, 67.5)]
    disparity = chart(html, "progress-gap-disparity")
    fit = next(t for t in disparity["data"] if t["mode"] == "lines")
    assert fit["y"] == pytest.approx([20.0, 25.0])


def training_result(slug: str, seconds: float | None, seeds: list[list[float]]) -> dict:
    metrics = {"test_top1_mean": 90.0, "test_top1_std": 1.0, "best_top1_mean": 91.0}
    if seconds is not None:
        metrics.update(seconds_to_target_mean=seconds, epochs_to_target_mean=3.0)
    curves = {f"seed_{i}": {"epoch": [1, 2, 3], "test_top1": acc, "train_loss": [1.0, 0.5, 0.3]}
              for i, acc in enumerate(seeds)}
    return make_result(slug, metrics, curves=curves)


def test_training_boards_show_mean_curves_with_a_seed_band(client, alice, catalogue):
    finished(alice, "opt-digits", "adam", {"opt-digits": training_result("opt-digits", 5.0, [[50, 80, 90], [60, 70, 94]])})
    fig = chart(client.get("/b/opt-digits/").content.decode(), "test-accuracy")
    band, mean = fig["data"][0], fig["data"][1]
    assert mean["y"] == [55.0, 75.0, 92.0]
    assert band["y"] == [60, 80, 94, 90, 70, 50]  # upper edge forward, lower edge back


def test_denoising_boards_draw_the_published_figures_as_reference_lines(client, alice, catalogue):
    finished(alice, "denoise-bsd68", "my-denoiser", {"denoise-bsd68-gauss25": make_result(
        "denoise-bsd68-gauss25", {"psnr": 28.0, "ssim": 0.8})})
    fig = chart(client.get("/b/denoise-bsd68/").content.decode(), "ranking")
    labels = [a["text"] for a in fig["layout"]["annotations"]]
    assert labels == ["Noise2Score (published): 29.12", "BM3D (published): 28.59"]


def test_a_denoising_board_plots_its_leaders_across_every_noise_setting(client, alice, bob, catalogue):
    settings = ["gauss25", "gauss50", "poisson0.01", "poisson0.05", "gamma100", "gamma50"]

    def results(offset: float, skip: str = "") -> dict:
        return {f"denoise-bsd68-{n}": make_result(f"denoise-bsd68-{n}", {"psnr": 25.0 + i + offset, "ssim": 0.8})
                for i, n in enumerate(settings) if n != skip}

    finished(alice, "denoise-bsd68", "strong", results(1.0))
    finished(bob, "denoise-bsd68", "weak", results(-1.0, skip="gauss50"), baseline=True)
    fig = chart(client.get("/b/denoise-bsd68/").content.decode(), "denoising-settings")
    lines = {t["name"]: t for t in fig["data"]}
    assert lines["strong"]["x"] == settings and lines["strong"]["y"] == [26.0, 27.0, 28.0, 29.0, 30.0, 31.0]
    assert lines["weak"]["y"] == [24.0, None, 26.0, 27.0, 28.0, 29.0]  # a gap where it has no result
    assert lines["weak"]["line"]["dash"] == "dot" and lines["strong"]["line"]["dash"] == "solid"
    assert lines["Noise2Score (published)"]["y"] == [29.12, 26.21, 30.81, 27.12, 32.67, 30.53]
