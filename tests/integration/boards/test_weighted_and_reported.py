"""Rankings by the reader's weights (issue 19 item 4) and reported results (item 5): the weighted
page's Dynascore from results as the runner records them, its weights in the address, and
published claims imported by a maintainer, kept out of the verified ranking unless asked for."""
from __future__ import annotations

import json
import re

import pytest
from django.core.management import CommandError, call_command

from leaderboard.benchmarks.models import Task
from leaderboard.boards.models import BoardEntry, ReportedResult
from leaderboard.boards.services import board_entry_upsert
from leaderboard.submissions.models import EvaluationJob, Submission

pytestmark = pytest.mark.django_db
GIB = 1024 ** 3


def measured(owner, name: str, top1: float, *, throughput: float, peak_gib: float, parameters: int = 11_200_000,
             limit_gib: float = 16, task_slug: str = "digits", submission: Submission | None = None,
             primary: str = "top1", **extra: float) -> Submission:
    """A public finished classifier whose result carries what the runner records (issue 19 item 4):
    timing.items_per_s, env.parameters and env.memory; on its board through the results' service."""
    task = Task.objects.select_related("benchmark").get(slug=task_slug)
    sub = submission or Submission.objects.create(
        owner=owner, benchmark=task.benchmark, name=name, artifact=f"x/{name}.pt2", artifact_name="m.pt2",
        artifact_sha256="0" * 64, artifact_size=1, status=Submission.Status.FINISHED,
        visibility=Submission.Visibility.PUBLIC)
    job = EvaluationJob.objects.create(
        submission=sub, task=task, state=EvaluationJob.State.SUCCEEDED, result_attempt=1,
        result={"metrics": {primary: top1, **extra}, "ci95": {primary: [top1 - 1, top1 + 1]},
                "timing": {"items_per_s": throughput},
                "env": {"parameters": parameters, "memory": {
                    "peak_bytes": int(peak_gib * GIB), "limit_bytes": int(limit_gib * GIB),
                    "source": "ru_maxrss of the sandboxed model server process"}}})
    board_entry_upsert(job=job, submission=sub)
    return sub


@pytest.fixture
def vector(catalogue, alice, bob, django_user_model):
    """PROTOCOLS' Dynascore test vector as three digits results: perf (70, 80, 90), throughput
    (300, 200, 100), memory (2, 4, 8) of 16 GiB; the parameter count is the same for all three."""
    carol = django_user_model.objects.create_user("carol", "carol@example.org", "carol-password-1")
    return [measured(alice, "fast-net", 70, throughput=300, peak_gib=2),
            measured(bob, "middle-net", 80, throughput=200, peak_gib=4),
            measured(carol, "accurate-net", 90, throughput=100, peak_gib=8)]


def ranking(html: str) -> list[tuple[str, str]]:
    """(name, Dynascore) of the weighted table's rows, top first."""
    table = html.split('id="weighted"', 1)[1].split("</table>", 1)[0]
    names = re.findall(r'<tr data-row="[sr]\d+"[^>]*>.*?<td>\s*(?:<a [^>]*>)?([^<]+?)\s*<', table, re.S)
    scores = re.findall(r'data-col="score">([^<]+)<', table)
    return list(zip(names, scores, strict=True))


def test_the_board_entry_keeps_what_the_runner_records(vector):
    entry = BoardEntry.objects.get(submission=vector[0])
    assert (entry.throughput, entry.peak_memory_bytes, entry.memory_limit_bytes, entry.parameters) == (
        300.0, 2 * GIB, 16 * GIB, 11_200_000)


def test_default_weights_rank_by_the_protocols_test_vector(client, vector):
    html = client.get("/b/digits/weighted/").content.decode()
    assert ranking(html) == [("accurate-net", "66.11"), ("middle-net", "63.33"), ("fast-net", "59.44")]
    assert "parameters is not weighed: the same for every result (AMRS 0)" in html
    assert 'name="w_performance"' in html and 'value="4"' in html  # the documented default


def test_weights_in_the_address_rank_on_the_server(client, vector):
    html = client.get("/b/digits/weighted/?w_performance=0&w_throughput=5&w_memory=0").content.decode()
    assert [name for name, _ in ranking(html)] == ["fast-net", "middle-net", "accurate-net"]
    assert ranking(html)[0][1] == "30.00"  # 300 images/s at AMRS 10 images/s per point


def test_a_bad_weight_is_refused_naming_the_parameter(client, vector):
    response = client.get("/b/digits/weighted/?w_throughput=9")
    assert response.status_code == 400
    assert "w_throughput must be a number from 0 to 5, not &#x27;9&#x27;" in response.content.decode()


def test_a_result_without_memory_drops_memory_and_says_so(client, vector, alice):
    BoardEntry.objects.filter(submission=vector[1]).update(peak_memory_bytes=None)
    html = client.get("/b/digits/weighted/").content.decode()
    assert "peak memory is not weighed: recorded for 2 of 3 results" in html


def test_not_a_classifier_benchmark_is_not_found(client, catalogue):
    assert client.get("/b/opt-synthetic/weighted/").status_code == 404


def _write(tmp_path, claims) -> str:
    path = tmp_path / "claims.json"
    path.write_text(json.dumps(claims))
    return str(path)


CLAIM = {"benchmark": "digits", "model": "Accurate-Net", "paper": "https://arxiv.org/abs/1512.03385",
         "source": "Table 2", "metrics": {"top1": 93.5}}


def test_reported_claims_are_shown_apart_and_ranked_only_when_asked(client, vector, tmp_path):
    call_command("import_reported", _write(tmp_path, {"results": [CLAIM, {**CLAIM, "model": "paper-only-net",
                                                                          "metrics": {"top1": 99.0}}]}))
    claim = ReportedResult.objects.get(model_name="Accurate-Net")
    assert (claim.task.slug, claim.value, claim.source) == ("digits", 93.5, "Table 2")
    html = client.get("/b/digits/weighted/").content.decode()
    assert [name for name, _ in ranking(html)] == ["accurate-net", "middle-net", "fast-net"]
    reported = html.split('id="reported"', 1)[1].split("</table>", 1)[0]
    assert "paper-only-net" in reported and "not run here" in reported
    assert re.search(rf'data-claim="{claim.pk}".*?data-col="difference">−3.5<', reported, re.S)  # 90 − 93.5

    ranked = client.get("/b/digits/weighted/?reported=ranked").content.decode()
    assert [name for name, _ in ranking(ranked)][:2] == ["paper-only-net", "Accurate-Net"]
    assert 'class="reported"' in ranked.split('id="weighted"', 1)[1]
    assert "throughput is not weighed: recorded for 3 of 5 results" in ranked


def test_importing_again_updates_the_claim(vector, tmp_path):
    call_command("import_reported", _write(tmp_path, [CLAIM]))
    call_command("import_reported", _write(tmp_path, [{**CLAIM, "metrics": {"top1": 94.0}}]))
    assert list(ReportedResult.objects.values_list("value", flat=True)) == [94.0]


@pytest.mark.parametrize(("claim", "message"), [
    ({**CLAIM, "paper": "arxiv 1512.03385"}, r"results\[1\]\.paper: not an http\(s\) URL"),
    ({k: v for k, v in CLAIM.items() if k != "model"}, r"results\[1\]\.model: a non-empty string is required"),
    ({**CLAIM, "metrics": {"top5": 99.0}}, r"results\[1\]\.metrics: task 'digits' is ranked by 'top1'"),
    ({**CLAIM, "metrics": {"top1": "93.5"}}, r"results\[1\]\.metrics\.top1: a finite number is required"),
    ({**CLAIM, "benchmark": "mnist"}, r"results\[1\]\.benchmark: no benchmark 'mnist'"),
    ({**CLAIM, "task": "cifar10"}, r"results\[1\]\.task: benchmark 'digits' has no task 'cifar10'"),
    ({**CLAIM, "venue": "CVPR"}, r"results\[1\]: unknown field 'venue'"),
    ({**CLAIM, "metrics": {"top1": 93.5, "x" * 51: 1.0}}, r"results\[1\]\.metrics: a metric name must have 1 to 50"),
])
def test_a_bad_file_names_the_claim_and_the_field(catalogue, tmp_path, claim, message):
    with pytest.raises(CommandError, match=message):
        call_command("import_reported", _write(tmp_path, [CLAIM, claim]))
    assert not ReportedResult.objects.exists()  # nothing half-imported


def test_a_file_that_is_not_json_says_so(catalogue, tmp_path):
    path = tmp_path / "claims.json"
    path.write_text("{not json")
    with pytest.raises(CommandError, match=r"claims\.json: not JSON"):
        call_command("import_reported", str(path))


def test_the_board_lists_claims_under_its_ranking_with_the_difference(client, vector, tmp_path):
    call_command("import_reported", _write(tmp_path, [CLAIM, {**CLAIM, "model": "paper-only-net",
                                                              "metrics": {"top1": 99.0}}]))
    html = client.get("/b/digits/").content.decode()
    board, rest = html.split('id="board"', 1)[1].split("</table>", 1)
    assert "reported" not in board and "paper-only-net" not in board  # the verified ranking alone
    claims = rest.split('id="reported"', 1)[1].split("</table>", 1)[0]
    assert claims.index("paper-only-net") < claims.index("Accurate-Net")  # best claim first
    assert re.search(r'Accurate-Net.*?>90<.*?data-col="difference">−3.5<', claims, re.S)
    assert 'href="/b/digits/weighted/"' in html and 'href="/b/digits/weighted/?reported=ranked"' in html


def test_an_empty_benchmark_says_so_without_notes_about_metrics(client, catalogue):
    html = client.get("/b/cifar10/weighted/").content.decode()
    assert "No public results yet." in html and 'id="dropped"' not in html


def test_robustness_tasks_add_their_metrics_with_their_utilities(client, catalogue, alice, bob):
    from leaderboard.boards import dynascore

    perf, mce, worst, disparity = (76.0, 80.0), (50.0, 60.0), (40.0, 30.0), (20.0, 35.0)
    for owner, name, i in ((alice, "robust-net", 0), (bob, "big-net", 1)):
        sub = measured(owner, name, perf[i], throughput=100, peak_gib=2, task_slug="imagenet-val")
        measured(owner, name, mce[i], throughput=100, peak_gib=2, task_slug="imagenet-c", submission=sub,
                 primary="mce")
        measured(owner, name, 70.0, throughput=100, peak_gib=2, task_slug="geode", submission=sub,
                 worst_region_top1=worst[i], disparity=disparity[i])
    html = client.get("/b/imagenet/weighted/?w_imagenet-c:mce=5").content.decode()
    for label in ("mCE · ImageNet-C", "worst-region top-1 · GeoDE", "disparity · GeoDE"):
        assert label in html
    normalized = dynascore.normalize(list(perf), {"imagenet-c:mce": [100 - m for m in mce],
                                                  "geode:worst_region_top1": list(worst),
                                                  "geode:disparity": [100 - d for d in disparity]})
    scores = dynascore.weighted(normalized, {"performance": 4, "imagenet-c:mce": 5, "geode:worst_region_top1": 1,
                                             "geode:disparity": 1})
    expected = sorted(zip(("robust-net", "big-net"), (f"{s:.2f}" for s in scores), strict=True),
                      key=lambda pair: -float(pair[1]))
    assert ranking(html) == expected
    assert expected[0][0] == "robust-net"  # a heavy weight on mCE puts the robust model first
    default = client.get("/b/imagenet/weighted/").content.decode()
    assert [name for name, _ in ranking(default)] == ["big-net", "robust-net"]  # performance 4, others 1
