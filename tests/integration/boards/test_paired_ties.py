"""Paired tests where researchers read them (issue 17 item 2): the compare page's McNemar p, b, c,
Δ and paired interval per task with Holm across tasks, and the board's "statistically tied" marks
from the paired test where per-image outcomes exist (the interval rule elsewhere)."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.db import connection
from django.test import TestCase
from django.test.utils import CaptureQueriesContext

from leaderboard.benchmarks.models import Task
from leaderboard.boards import paired
from leaderboard.boards.models import BoardEntry
from leaderboard.boards.services import board_entries_refresh_submission, board_entry_upsert
from leaderboard.boards.templatetags.board_tags import sig, signed
from leaderboard.submissions.models import EvaluationJob, Submission

pytestmark = pytest.mark.django_db
N = 450  # the digits task's test split


def outcomes_file(wrong, n: int = N, *, shuffle: int | None = None, **groups: np.ndarray) -> bytes:
    """A per-image .npz as the runner writes it: the model misses the images ``wrong``; ``groups``
    are the task's group keys (corruption, severity, region)."""
    label = np.arange(n, dtype=np.int64) % 10
    pred = label.copy()
    pred[list(wrong)] = (label[list(wrong)] + 1) % 10
    arrays = {"index": np.arange(n, dtype=np.int64), "label": label, "pred": pred,
              "top5_hit": np.ones(n, dtype=bool), "loss": np.full(n, 0.1), "el2n": np.full(n, 0.2), **groups}
    if shuffle is not None:
        order = np.random.default_rng(shuffle).permutation(n)
        arrays = {k: v[order] for k, v in arrays.items()}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def scored(owner, name: str, wrong, *, task_slug: str = "digits", outcomes: bool = True, shuffle=None,
           public: bool = True, n: int = N, submission: Submission | None = None, **groups) -> Submission:
    """A finished submission whose job on ``task_slug`` missed ``wrong`` of ``n`` images, on its
    board through the service results take, with its per-image file stored when ``outcomes``."""
    task = Task.objects.select_related("benchmark").get(slug=task_slug)
    sub = submission or Submission.objects.create(
        owner=owner, benchmark=task.benchmark, name=name, artifact=f"x/{name}.pt2", artifact_name="m.pt2",
        artifact_sha256="0" * 64, artifact_size=1, status=Submission.Status.FINISHED,
        visibility=Submission.Visibility.PUBLIC if public else Submission.Visibility.PRIVATE)
    top1 = 100.0 * (n - len(wrong)) / n
    job = EvaluationJob.objects.create(submission=sub, task=task, state=EvaluationJob.State.SUCCEEDED,
                                       result_attempt=1,
                                       result={"metrics": {"top1": top1}, "ci95": {"top1": [top1 - 2, top1 + 2]},
                                               "files": {"per_image": {"n": n}} if outcomes else {}})
    with committed():
        if outcomes:
            job.per_image.save("outcomes.npz", ContentFile(outcomes_file(wrong, n, shuffle=shuffle, **groups)))
        board_entry_upsert(job=job, submission=sub)
    return sub


def committed():
    """Run what the block's commit would run (the tie refresh the site worker gets, run inline as
    the tests' Celery runs site tasks), as the result's transaction commits in production."""
    return TestCase.captureOnCommitCallbacks(execute=True)


def ranks(client) -> dict[str, str]:
    """The board's rank cells by submission name, as a reader sees them."""
    html = client.get("/b/digits/").content.decode()
    cells = {}
    for row in html.split('<tr')[1:]:
        if 'data-submission=' not in row or 'data-col="rank"' not in row:
            continue
        name = row.split('/">', 1)[1].split("</a>", 1)[0]
        cell = row.split('data-col="rank">', 1)[1].split("</td>", 1)[0]
        text = "".join(part.split(">", 1)[-1] for part in cell.split("<"))
        cells[name] = text.strip()
    return cells


def test_two_submissions_that_differ_on_a_handful_of_images_both_show_rank_equal_one(client, alice, bob):
    scored(alice, "alice-net", range(0, 20))
    scored(bob, "bob-net", [*range(3, 20), 100, 101, 102, 103, 104])  # b 3, c 5 against alice
    assert ranks(client) == {"alice-net": "=1", "bob-net": "=1"}
    bob_row = BoardEntry.objects.get(submission_name="bob-net")
    assert (bob_row.paired["b"], bob_row.paired["c"]) == (3, 5)
    assert bob_row.paired["p_holm"] == pytest.approx(paired.mcnemar_exact(3, 5))
    html = client.get("/b/digits/").content.decode()
    assert "McNemar" in html and "p̃ 0.727" in html  # the rule that made the tie, and its numbers


def test_the_csv_export_says_which_rule_tied_a_row_and_the_rank_it_shares(client, alice, bob):
    scored(alice, "alice-net", range(0, 20))
    scored(bob, "bob-net", [*range(3, 20), *range(100, 105)])
    scored(bob, "carol-net", range(0, 60), outcomes=False)  # its interval is far below bob-net's
    scored(alice, "dave-net", range(0, 61), outcomes=False)  # and overlaps carol-net's
    rows = list(csv.DictReader(io.StringIO(client.get("/b/digits/export.csv").getvalue().decode())))
    assert [(r["name"], r["tie_rule"], r["shared_rank"], r["tied_with_above"]) for r in rows] == [
        ("alice-net", "paired", "1", "False"), ("bob-net", "paired", "1", "False"),
        ("carol-net", "", "", "False"), ("dave-net", "interval", "", "True")]


def test_two_submissions_that_differ_on_many_images_are_ranked_apart(client, alice, bob):
    scored(alice, "alice-net", range(0, 20))
    scored(bob, "bob-net", range(20, 80))  # b 20, c 60: p far below 0.05
    assert ranks(client) == {"alice-net": "1", "bob-net": "2"}


def test_ties_are_not_chained_and_the_rest_is_ranked_again(client, alice, bob):
    scored(alice, "a", range(0, 20))
    scored(bob, "b", range(200, 226))  # nothing shared with a: b 20, c 26, tied
    scored(bob, "c", range(0, 32))  # a's misses and 12 more: separated from a, though close to b
    scored(alice, "d", range(0, 34))  # c's misses and 2 more: tied with c in the second round
    assert ranks(client) == {"a": "=1", "b": "=1", "c": "=3", "d": "=3"}


def test_outcomes_uploaded_after_the_result_bring_the_paired_tie(client, alice, bob):
    scored(alice, "alice-net", range(0, 20))
    late = scored(bob, "bob-net", [*range(3, 20), *range(100, 105)], outcomes=False)
    assert ranks(client) == {"alice-net": "1", "bob-net": "≈2"}
    job = late.jobs.get()
    job.per_image.save("outcomes.npz", ContentFile(outcomes_file([*range(3, 20), *range(100, 105)])),
                       save=False)
    with committed():
        job.save(update_fields=["per_image"])  # as the runner's upload stores it
    assert ranks(client) == {"alice-net": "=1", "bob-net": "=1"}


def test_rows_without_outcomes_keep_the_interval_rule_and_say_so(client, alice, bob):
    scored(alice, "alice-net", range(0, 20))
    scored(bob, "bob-net", range(0, 25), outcomes=False)  # intervals overlap alice's
    assert ranks(client) == {"alice-net": "1", "bob-net": "≈2"}
    html = client.get("/b/digits/").content.decode()
    assert "no per-image outcomes to pair" in html
    rows = client.get("/api/v1/benchmarks/digits/leaderboard/").json()["rows"]
    assert [(r["name"], r["tie_rule"], r["tied_with_above"]) for r in rows] == [
        ("alice-net", "", False), ("bob-net", "interval", True)]


def test_files_in_another_order_pair_image_by_image(client, alice, bob):
    scored(alice, "alice-net", range(0, 20))
    scored(bob, "bob-net", range(20, 80), shuffle=3)
    assert ranks(client) == {"alice-net": "1", "bob-net": "2"}
    assert BoardEntry.objects.get(submission_name="bob-net").tie_rank == 2


def test_a_submission_made_private_leaves_the_paired_tie(client, alice, bob):
    scored(alice, "alice-net", range(0, 20))
    bob_sub = scored(bob, "bob-net", range(0, 22))
    carol = scored(bob, "carol-net", range(0, 21))
    assert ranks(client)["carol-net"] == "=1"
    Submission.objects.filter(pk=bob_sub.pk).update(visibility=Submission.Visibility.PRIVATE)
    with committed():
        board_entries_refresh_submission(submission=Submission.objects.get(pk=bob_sub.pk))
    assert BoardEntry.objects.get(submission=bob_sub).tie_rank is None
    assert BoardEntry.objects.get(submission=carol).paired["m"] == 1
    assert ranks(client) == {"alice-net": "=1", "carol-net": "=1"}


def test_a_leader_rerun_off_the_board_leaves_its_group_ranked_again(client, alice, bob):
    from leaderboard.submissions.services import submission_rerun

    leader = scored(alice, "alice-net", range(0, 20))
    scored(bob, "bob-net", [*range(3, 20), *range(100, 105)])
    scored(bob, "carol-net", [*range(2, 20), *range(100, 103)])  # one miss fewer than bob-net: it leads next
    assert ranks(client) == {"alice-net": "=1", "bob-net": "=1", "carol-net": "=1"}
    with committed():
        submission_rerun(submission_id=leader.pk)
    carol = BoardEntry.objects.get(submission_name="carol-net")
    assert carol.paired["leader"] == carol.submission_id and carol.paired["group_size"] == 2
    assert ranks(client) == {"bob-net": "=1", "carol-net": "=1"}


def test_a_board_with_paired_ties_makes_as_many_queries_for_5_as_for_30_rows(client, alice):
    def count():
        with CaptureQueriesContext(connection) as ctx:
            assert client.get("/b/digits/").status_code == 200
        return len(ctx.captured_queries)

    for i in range(5):
        scored(alice, f"m{i}", range(0, 20 + i))
    small = count()
    for i in range(5, 30):
        scored(alice, f"m{i}", range(0, 20 + i))
    assert count() == small


def test_the_compare_page_shows_mcnemar_and_the_paired_interval(client, alice, bob):
    a = scored(alice, "alice-net", range(0, 20))
    b = scored(bob, "bob-net", range(12, 40))  # b 12 (a right), c 20 (b right)
    html = client.get(f"/compare/?ids={a.pk},{b.pk}").content.decode()
    test = paired.paired_test(paired.align(_arrays(range(12, 40)), _arrays(range(0, 20))).right_a,
                              paired.align(_arrays(range(12, 40)), _arrays(range(0, 20))).right_b)
    assert (test.b, test.c) == (12, 20)
    assert f"{test.p:.3g}" in html and "McNemar" in html
    assert f"[{signed(test.ci[0])}, {signed(test.ci[1])}]" in html
    assert test.ci[0] < -1.7 < test.ci[1]
    assert "−1.78" in html  # Δ = 100·(12 − 20)/450


def test_the_compare_page_corrects_across_tasks_and_resamples_corruption_cells_within_themselves(alice, bob):
    from leaderboard.boards.compare import paired_tests

    cells = {"corruption": np.repeat(np.array(["fog", "snow"]), 100),
             "severity": np.tile(np.repeat(np.array([1, 5]), 50), 2)}
    a = scored(alice, "alice-net", range(0, 20), task_slug="cifar10", n=300)
    scored(alice, "alice-net", range(0, 40), task_slug="cifar10-c", n=200, submission=a, **cells)
    b = scored(bob, "bob-net", range(10, 32), task_slug="cifar10", n=300)  # b 10, c 12
    scored(bob, "bob-net", range(25, 40), task_slug="cifar10-c", n=200, submission=b, **cells)  # b 25, c 0
    lines = paired_tests(submissions=[a, b])
    clean, corrupted = lines["cifar10"][0], lines["cifar10-c"][0]
    assert (clean.test.b, clean.test.c, corrupted.test.b, corrupted.test.c) == (10, 12, 25, 0)
    p = [paired.mcnemar_exact(10, 12), paired.mcnemar_exact(25, 0)]
    assert [clean.p_holm, corrupted.p_holm] == pytest.approx(paired.holm(p)) and clean.m == corrupted.m == 2
    right_a, right_b = np.ones(200, bool), np.ones(200, bool)
    right_a[:40], right_b[25:40] = False, False
    cell = cells["corruption"].astype(object) + cells["severity"].astype(str)
    assert corrupted.test.ci == paired.paired_bootstrap(right_b, right_a, sets=np.unique(cell, return_inverse=True)[1])
    assert corrupted.separated and not clean.separated


def test_the_compare_page_says_where_outcomes_are_missing(client, alice, bob):
    a = scored(alice, "alice-net", range(0, 20))
    b = scored(bob, "bob-net", range(0, 30), outcomes=False)
    html = client.get(f"/compare/?ids={a.pk},{b.pk}").content.decode()
    assert "No paired test: bob-net has no per-image outcomes on this task" in html


def _arrays(wrong) -> dict:
    return dict(np.load(io.BytesIO(outcomes_file(wrong))))


def test_results_and_outcomes_sent_through_the_runner_api_reach_the_board_and_compare_page(
        client, runner_api, alice, bob, make_submission, django_capture_on_commit_callbacks):
    """The path a runner takes: the result names its per-image file, the file follows it."""
    import hashlib

    from runner.baselines.classifiers import FOLDER
    from runner.spec import make_result

    subs = []
    for owner, name, wrong in ((alice, "alice-cnn", range(0, 20)), (bob, "bob-cnn", [*range(3, 20), *range(100, 105)])):
        sub = make_submission(owner, benchmark="digits", source=(FOLDER / "digits_cnn.pt").read_bytes(),
                              filename="model.pt", hparams={"precision": "fp32"}, name=name)
        job = sub.jobs.get()
        payload = outcomes_file(wrong)
        assert runner_api.claim(job.pk).status_code == 200
        doc = make_result("digits", {"top1": 100.0 * (N - len(wrong)) / N, "top5": 100.0}, timing={"wall_s": 1.0})
        doc["files"] = {"per_image": {"name": "r.per_image.npz", "sha256": hashlib.sha256(payload).hexdigest(),
                                      "n": N, "bytes": len(payload)}}
        with django_capture_on_commit_callbacks(execute=True):
            assert runner_api.result(job.pk, 1, doc).status_code == 200
            response = runner_api.client.post(f"/api/runner/v1/jobs/{job.pk}/per-image/?attempt=1", data=payload,
                                              content_type="application/octet-stream", **runner_api.auth)
        assert response.status_code == 200, response.content
        subs.append(sub)
    assert ranks(client) == {"alice-cnn": "=1", "bob-cnn": "=1"}
    html = client.get(f"/compare/?ids={subs[0].pk},{subs[1].pk}").content.decode()
    assert f">{sig(paired.mcnemar_exact(3, 5), 3)}<" in html and "not separable" in html


def test_one_file_of_other_images_at_the_top_leaves_only_its_own_row_to_the_interval_rule(alice, bob, client):
    """The tie rule compared every row with the best row's file: a best row whose runner scored
    other images (here 449 of the 450) left every row to the interval rule, not just its own."""
    scored(alice, "odd-best", [], n=449)
    scored(bob, "second", [1, 2])
    scored(bob, "third", [1, 2, 3])
    rows = {e.submission_name: e for e in BoardEntry.objects.filter(task__slug="digits")}
    assert rows["odd-best"].tie_rank is None and rows["odd-best"].paired == {}
    assert rows["second"].tie_rank == rows["third"].tie_rank is not None
    assert rows["third"].paired["leader"] == rows["second"].submission_id and rows["third"].paired["n"] == N
