"""Time to target on the optimizer boards and AlgoPerf scoring on the profiles page, rendered from
board rows whose results carry per-seed curves: the target and its source, the samples and
seconds columns (with "not reached"), the charts, and the scores with their ratios."""
from __future__ import annotations

import json
import re

import pytest
from django.utils import timezone

from leaderboard.benchmarks.models import Benchmark, Task
from leaderboard.boards.selectors import optimizer_profiles
from leaderboard.boards.services import board_entry_upsert
from leaderboard.submissions.models import EvaluationJob, Submission
from runner.catalogue import CATALOGUE
from runner.spec import make_result

pytestmark = pytest.mark.django_db

REFERENCE = "reference optimizer"


def finished(owner, benchmark: str, name: str, results: dict[str, dict], *, family: str = "",
             baseline: bool = False) -> Submission:
    bench = Benchmark.objects.get(slug=benchmark)
    sub = Submission.objects.create(owner=owner, benchmark=bench, name=name, artifact=f"x/{name}",
                                    artifact_name="opt.py", artifact_sha256="0" * 64, artifact_size=1,
                                    status=Submission.Status.FINISHED, is_baseline=baseline, model_family=family)
    for slug, doc in results.items():
        job = EvaluationJob.objects.create(submission=sub, task=Task.objects.get(slug=slug), state="succeeded",
                                           attempt=1, result=doc, result_attempt=1, finished_at=timezone.now())
        board_entry_upsert(job=job, submission=sub)
    return sub


def trained(slug: str, seeds: list[tuple[list[float], list[float], list[int]]], key: str = "test_top1") -> dict:
    """A training result: per seed (validation values, seconds, samples) per epoch."""
    curves = {f"seed_{i}": {"epoch": list(range(1, len(v) + 1)), key: v, "seconds": s, "samples": n,
                            "train_loss": [1.0 / (j + 1) for j in range(len(v))]}
              for i, (v, s, n) in enumerate(seeds)}
    finals = [v[-1] for v, _, _ in seeds]
    return make_result(slug, {f"{key}_mean": sum(finals) / len(finals), "test_top1_std": 0.0, "best_top1_mean": 0.0,
                              "seconds_to_target_mean": 1.0},
                       curves=curves)


EPOCHS = [640, 1280, 1920]


@pytest.fixture
def digits_board(alice, catalogue, db):
    """opt-digits: Adam (per-seed bests 96, 98, 97: mean 97) sets the target 97, not SGD (mean
    91). Times to 97: Adam's seeds never / 1.5 s at 640 / 4 s at 1,280 → median 4 s, 1,280
    samples; fast: 0.5 s at 500 samples on both seeds; SGD never."""
    from django.contrib.auth import get_user_model

    maintainers, _ = get_user_model().objects.get_or_create(username="baselines")
    subs = {
        "Adam": finished(maintainers, "opt-digits", "Adam", {"opt-digits": trained("opt-digits", [
            ([90.0, 96.0, 95.0], [1.0, 2.0, 3.0], EPOCHS), ([97.0, 98.0, 98.0], [1.5, 3.0, 4.5], EPOCHS),
            ([93.0, 97.0, 96.0], [2.0, 4.0, 6.0], EPOCHS)])}, family=REFERENCE, baseline=True),
        "SGD with momentum": finished(maintainers, "opt-digits", "SGD with momentum", {"opt-digits": trained(
            "opt-digits", [([88.0, 90.0, 90.0], [1.0, 2.0, 3.0], EPOCHS), ([89.0, 91.0, 91.0], [1.0, 2.0, 3.0], EPOCHS),
                           ([92.0, 92.0, 92.0], [1.0, 2.0, 3.0], EPOCHS)])}, family=REFERENCE, baseline=True),
        # a baseline of another family never sets the target, however good
        "TrAct (SGD)": finished(maintainers, "opt-digits", "TrAct (SGD)", {"opt-digits": trained("opt-digits", [
            ([99.0, 99.5, 99.9], [1.0, 2.0, 3.0], EPOCHS)])}, family="seed method", baseline=True),
        "fast": finished(alice, "opt-digits", "fast", {"opt-digits": trained("opt-digits", [
            ([97.5, 98.0], [0.5, 1.0], [500, 1000]), ([98.0, 99.0], [0.5, 1.0], [500, 1000])])}),
    }
    return subs


def row(html: str, submission: Submission) -> str:
    start = html.index(f'data-submission="{submission.pk}"')
    return html[start:html.index("</tr>", start)]


def cell(html: str, submission: Submission, column: str) -> str:
    match = re.search(rf'data-col="{column}">([^<]*)<', row(html, submission))
    return match.group(1)


def chart(html: str, name: str) -> dict:
    opening = f'<script id="{name}" type="application/json">'
    start = html.index(opening) + len(opening)
    return json.loads(html[start:html.index("</script>", start)])


def test_an_optimizer_board_shows_the_reference_target_and_each_rows_samples_and_time_to_it(client, digits_board):
    html = client.get("/b/opt-digits/").content.decode()
    assert '<span id="target-rule">test_top1 ≥ 97</span>' in html
    assert '<span id="target-source">median best of Adam over 3 seeds</span>' in html
    assert "fixed target (test top-1 ≥ 95.0%)" in html  # the runner's own columns are told apart

    subs = digits_board
    assert (cell(html, subs["Adam"], "samples-to-target"), cell(html, subs["Adam"], "time-to-target")) == ("1,280", "4")
    assert (cell(html, subs["fast"], "samples-to-target"), cell(html, subs["fast"], "time-to-target")) == ("500", "0.5")
    assert cell(html, subs["SGD with momentum"], "time-to-target") == "not reached"
    assert cell(html, subs["SGD with momentum"], "samples-to-target") == "not reached"
    assert cell(html, subs["TrAct (SGD)"], "samples-to-target") == "640"

    curve = chart(html, "target-curve")
    assert curve["layout"]["shapes"][0]["y0"] == 97.0
    assert curve["layout"]["annotations"][0]["text"] == "target test_top1 ≥ 97 (median best of Adam over 3 seeds)"
    adam = next(t for t in curve["data"] if t["name"] == "Adam")
    assert adam["x"] == EPOCHS and adam["y"] == pytest.approx([(90 + 97 + 93) / 3, (96 + 98 + 97) / 3, (95 + 98 + 96) / 3])
    bars = chart(html, "time-to-target")["data"][0]
    labelled = dict(zip(bars["y"], bars["text"], strict=True))
    assert labelled["fast"] == "0.5" and labelled["Adam (baseline)"] == "4"
    assert labelled["SGD with momentum (baseline)"] == "not reached"
    assert bars["y"][-1] == "fast"  # the fastest drawn at the top


def test_a_board_without_a_reference_result_says_there_is_no_target_yet(client, alice, catalogue):
    sub = finished(alice, "opt-digits", "mine", {"opt-digits": trained("opt-digits", [([97.0], [1.0], [640])])})
    html = client.get("/b/opt-digits/").content.decode()
    assert "no target yet" in html
    assert cell(html, sub, "time-to-target") == "–"
    assert 'id="target-curve"' not in html


def test_a_lower_is_better_workload_reaches_its_target_from_above(client, alice, catalogue):
    """The transformer's case (val_bpb, lower is better), on a hand-made optimizer task."""
    from django.contrib.auth import get_user_model

    bench = Benchmark.objects.create(slug="opt-text-test", title="Optimizers: text", kind="optimizer")
    Task.objects.create(slug="opt-text-test", benchmark=bench, title="Byte-level transformer",
                        primary_metric="val_bpb_mean", higher_is_better=False)
    steps = [3200, 6400, 9600]
    maintainers, _ = get_user_model().objects.get_or_create(username="baselines")
    finished(maintainers, "opt-text-test", "Adam", {"opt-text-test": trained("opt-text-test", [
        ([2.4, 1.9, 1.8], [20.0, 40.0, 60.0], steps), ([2.3, 1.8, 1.7], [20.0, 40.0, 60.0], steps)], key="val_bpb")},
        family=REFERENCE, baseline=True)
    sgd = finished(alice, "opt-text-test", "SGD", {"opt-text-test": trained("opt-text-test", [
        ([2.9, 2.4, 1.75], [10.0, 20.0, 30.0], steps), ([2.9, 1.7, 1.6], [10.0, 20.0, 30.0], steps)], key="val_bpb")})
    html = client.get("/b/opt-text-test/").content.decode()
    assert '<span id="target-rule">val_bpb ≤ 1.75</span>' in html  # median of the bests 1.8 and 1.7
    # SGD: seed 0 at step 3 (30 s, 9,600), seed 1 at step 2 (20 s, 6,400): medians 25 s and 8,000
    assert (cell(html, sgd, "samples-to-target"), cell(html, sgd, "time-to-target")) == ("8,000", "25")
    assert chart(html, "validation-val-bpb")["layout"]["xaxis"]["title"]["text"] == "epoch"


def test_the_profiles_page_scores_optimizers_the_algoperf_way_over_every_training_workload(
        client, alice, bob, digits_board):
    # cifar10: Adam's bests 80, 84, 82 → target 82; slow reaches it in 100 s, Adam in 300 s (3×), fast
    # in 500 s (5× > the cap of 4: ∞). cifar100 (and any other training workload of the catalogue)
    # has no result: every optimizer is ∞ there, yet it counts in n.
    from django.contrib.auth import get_user_model

    maintainers = get_user_model().objects.get(username="baselines")
    slug, epochs = "opt-cifar10-resnet18", [50_000, 100_000]
    finished(maintainers, slug, "Adam", {slug: trained(slug, [([70.0, 80.0], [150.0, 300.0], epochs),
                                                              ([82.0, 84.0], [300.0, 600.0], epochs),
                                                              ([81.0, 82.0], [150.0, 300.0], epochs)])},
             family=REFERENCE, baseline=True)
    finished(alice, slug, "fast", {slug: trained(slug, [([60.0, 83.0], [250.0, 500.0], epochs)])})
    finished(bob, slug, "slow", {slug: trained(slug, [([85.0, 86.0], [100.0, 200.0], epochs)])})

    workloads = {t.slug for b in CATALOGUE if b.kind == "optimizer" for t in b.tasks if not t.slug.startswith("opt-f")}
    n = len(workloads)
    data = optimizer_profiles()
    assert data["n"] == n and set(data["tasks"]) == workloads and {"opt-digits", slug} < workloads
    assert data["targets"][slug].value == 82.0 and data["targets"]["opt-cifar100-resnet18"] is None
    seconds = data["clocks"]["seconds"]
    order = [t for t in data["tasks"]]
    ratios = {label: dict(zip(order, rs, strict=True)) for label, rs in seconds["ratios"].items()}
    # digits: fast 0.5 s is the fastest; Adam 4 s is 8× (∞); TrAct reaches 97 at 1 s (2×)
    assert ratios["fast (alice)"] == {w: 1.0 if w == "opt-digits" else float("inf") for w in order}
    assert ratios["Adam"][slug] == 3.0 and ratios["slow (bob)"][slug] == 1.0
    assert ratios["TrAct (SGD)"]["opt-digits"] == 2.0
    scores = {label: (exact, trapz) for label, exact, trapz in seconds["scores"]}
    assert scores["fast (alice)"][0] == pytest.approx(3 / (3 * n))  # (4 − 1) / (3n)
    assert scores["Adam"][0] == pytest.approx(1 / (3 * n))  # (4 − 3) / (3n)
    assert scores["TrAct (SGD)"][0] == pytest.approx(2 / (3 * n))
    assert scores["SGD with momentum"] == (0.0, 0.0)
    assert scores["fast (alice)"][1] == pytest.approx(scores["fast (alice)"][0], abs=0.01)  # the trapezoid: close
    # samples: digits fast 500, TrAct 640, Adam 1,280 (2.56×); cifar10 slow 50,000, Adam's median 100,000 (2×)
    samples = {label: dict(zip(order, rs, strict=True)) for label, rs in data["clocks"]["samples"]["ratios"].items()}
    assert samples["Adam"]["opt-digits"] == pytest.approx(2.56) and samples["Adam"][slug] == pytest.approx(2.0)

    html = client.get("/optimizers/profiles/").content.decode()
    assert f'<span id="n-workloads">{n}</span>' in html
    assert "relative to the current field" in html
    targets = html[html.index('id="targets"'):]
    assert "test_top1 ≥ 82" in targets and "median best of Adam over 3 seeds" in targets
    table = html[html.index('id="scores-seconds"'):html.index('id="scores-samples"')]
    ranked = re.findall(r'data-optimizer="([^"]+)"', table)
    assert ranked[0] == "fast (alice)" and ranked.index("TrAct (SGD)") < ranked.index("Adam")
    fast = table[table.index('data-optimizer="fast (alice)"'):]
    shown = re.findall(r'<td class="num[^"]*">([^<]*)</td>', fast[:fast.index("</tr>")])[1:]
    assert shown[0] == f"{1 / n:.4f}" and shown[2:] == ["1.00" if w == "opt-digits" else "∞" for w in order]
    for name in ("profiles", "profiles-samples"):
        figure = chart(html, name)
        assert {t["name"] for t in figure["data"]} >= {"fast (alice)", "Adam", "slow (bob)"}
        assert f"share of {n} workloads" in figure["layout"]["yaxis"]["title"]["text"]


def test_the_board_exports_carry_the_target_and_each_rows_time_to_it(client, digits_board):
    import csv
    import io

    body = json.loads(client.get("/b/opt-digits/export.json").getvalue())
    assert body["target"] == {"rule": "test_top1 ≥ 97", "value": 97.0, "key": "test_top1",
                              "source": "median best of Adam over 3 seeds"}
    rows = {r["name"]: r["time_to_target"] for r in body["rows"]}
    assert rows["Adam"] == {"seconds": 4.0, "samples": 1280, "reached": True}
    assert rows["SGD with momentum"] == {"seconds": None, "samples": None, "reached": False}
    table = {r["name"]: r for r in csv.DictReader(io.StringIO(client.get("/b/opt-digits/export.csv").getvalue().decode()))}
    assert table["fast"]["samples_to_target"] == "500" and table["fast"]["seconds_to_reference_target"] == "0.5"
    assert table["SGD with momentum"]["seconds_to_reference_target"] == "not reached"
    assert table["fast"]["seconds_to_target_mean"] == "1.0"  # the runner's fixed-target figure, kept apart
