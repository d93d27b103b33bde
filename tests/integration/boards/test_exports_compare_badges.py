"""Exports, comparison, badges, ties and charts: what a researcher downloads, links and reads."""
from __future__ import annotations

import csv
import io
import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from leaderboard.benchmarks.models import Task
from leaderboard.boards import charts
from leaderboard.boards.models import BoardEntry
from leaderboard.submissions.models import Submission

pytestmark = pytest.mark.django_db


def finish(runner_api, finish_job, sub, loss):
    for job in sub.jobs.select_related("task"):
        finish_job(runner_api, job, final_loss=loss)
    return sub


@pytest.fixture
def two_finished(alice, bob, make_submission, runner_api, finish_job):
    a = finish(runner_api, finish_job, make_submission(alice, name="alice-opt"), 0.01)
    b = finish(runner_api, finish_job, make_submission(bob, name="bob-opt"), 0.04)
    return a, b


def test_the_board_downloads_as_csv_and_json_in_rank_order(client, two_finished):
    response = client.get("/b/opt-synthetic/export.csv?task=opt-f1")
    assert response["Content-Type"].startswith("text/csv")
    assert 'filename="opt-synthetic-opt-f1.csv"' in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.getvalue().decode())))
    assert [(r["rank"], r["name"], float(r["final_loss"])) for r in rows] == [("1", "alice-opt", 0.01), ("2", "bob-opt", 0.04)]
    body = json.loads(client.get("/b/opt-synthetic/export.json?task=opt-f1").getvalue())
    assert body["primary_metric"] == "final_loss" and [r["name"] for r in body["rows"]] == ["alice-opt", "bob-opt"]
    assert client.get("/b/opt-synthetic/export.xlsx").status_code == 404


def test_a_submission_downloads_as_csv_with_one_row_per_metric(client, two_finished):
    a, _ = two_finished
    rows = list(csv.DictReader(io.StringIO(client.get(f"/s/{a.pk}/export.csv").content.decode())))
    f1 = {r["metric"]: float(r["value"]) for r in rows if r["task"] == "opt-f1"}
    assert f1["final_loss"] == 0.01 and set(f1) == {"final_x", "final_loss", "min_loss"}
    full = json.loads(client.get(f"/s/{a.pk}/export.json").content)
    assert full["results"]["opt-f2"]["curves"]["trajectory"]["x"][0] == -1.0


def test_the_badge_shows_the_rank_on_the_lead_task(client, two_finished):
    _, b = two_finished
    response = client.get(f"/s/{b.pk}/badge.svg")
    assert response["Content-Type"] == "image/svg+xml"
    assert "#2 of 2" in response.content.decode()


def test_comparing_two_submissions_shows_paired_differences_against_the_first(client, two_finished):
    a, b = two_finished
    html = client.get(f"/compare/?ids={a.pk},{b.pk}").content.decode()
    assert "alice-opt" in html and "bob-opt" in html
    assert "Δ +0.03" in html
    assert 'data-chart="trajectory-opt-f1"' in html


def test_comparing_needs_two_to_four_submissions_of_one_benchmark(client, alice, two_finished, make_submission):
    a, _ = two_finished
    assert "Choose two to four" in client.get(f"/compare/?ids={a.pk}").content.decode()
    assert "Choose two to four" in client.get("/compare/?ids=1,2,3,4,5").content.decode()
    other = make_submission(alice, benchmark="opt-digits", name="digits-opt")
    assert "different benchmarks" in client.get(f"/compare/?ids={a.pk},{other.pk}").content.decode()
    assert client.get(f"/compare/?ids={a.pk},999999").status_code == 404


def _entry(task, sub, value, ci=None):
    return BoardEntry.objects.create(
        task=task, benchmark=task.benchmark, submission=sub, value=value,
        ci_low=ci[0] if ci else None, ci_high=ci[1] if ci else None, metrics={task.primary_metric: value},
        submission_name=sub.name, owner_name=sub.owner.username, submitted_at=timezone.now())


def _bare_submission(owner, name, benchmark):
    return Submission.objects.create(owner=owner, benchmark=benchmark, name=name, artifact=f"x/{name}.py",
                                     artifact_name="x.py", artifact_sha256="0" * 64, artifact_size=1,
                                     status=Submission.Status.FINISHED)


def test_rows_whose_intervals_overlap_the_row_above_are_shown_as_ties(client, alice):
    task = Task.objects.get(slug="digits")
    for name, value, ci in [("a", 95.0, (94.0, 96.0)), ("b", 94.5, (93.5, 95.5)), ("c", 90.0, (89.0, 91.0))]:
        _entry(task, _bare_submission(alice, name, task.benchmark), value, ci)
    rows = client.get("/api/v1/benchmarks/digits/leaderboard/").json()["rows"]
    assert [(r["name"], r["rank"], r["tied_with_above"]) for r in rows] == [
        ("a", 1, False), ("b", 2, True), ("c", 3, False)]


def test_a_board_page_makes_the_same_number_of_queries_for_5_or_60_submissions(client, alice):
    task = Task.objects.get(slug="digits")

    def count_queries(url):
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(url).status_code == 200
        return len(ctx.captured_queries)

    urls = ["/b/digits/", "/api/v1/benchmarks/digits/leaderboard/", "/", "/b/digits/export.csv"]
    for i in range(5):
        _entry(task, _bare_submission(alice, f"m{i}", task.benchmark), 50.0 + i)
    small = [count_queries(u) for u in urls]
    for i in range(5, 60):
        _entry(task, _bare_submission(alice, f"m{i}", task.benchmark), 50.0 + i)
    large = [count_queries(u) for u in urls]
    assert small == large


def test_the_ranking_chart_puts_the_best_at_the_top_with_intervals():
    rows = [{"name": "best", "value": 0.9, "ci95": [0.85, 0.95], "is_baseline": False},
            {"name": "ref", "value": 0.7, "ci95": None, "is_baseline": True}]
    fig = charts.ranking_figure(task_title="Digits", metric="top1", higher_is_better=True, rows=rows)
    bar = fig["data"][0]
    assert bar["y"] == ["ref (baseline)", "best"]  # Plotly draws bottom-up
    assert bar["error_x"]["array"] == pytest.approx([0, 0.05])
    assert bar["error_x"]["arrayminus"] == pytest.approx([0, 0.05])
    assert "higher is better" in fig["layout"]["title"]["text"]


def test_board_pages_embed_charts_and_serve_plotly_from_the_site(client, two_finished):
    html = client.get("/b/opt-synthetic/").content.decode()
    assert 'data-chart="ranking"' in html and 'data-chart="trajectory"' in html
    assert "/static/plotly/plotly.min.js" in html
    assert "cdn" not in html.lower()
    js = client.get("/static/plotly/plotly.min.js")
    assert js.status_code == 200
