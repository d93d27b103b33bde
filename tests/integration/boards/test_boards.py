"""Leaderboards and pages: ranking by each task's own metric and direction, ties, visibility."""
from __future__ import annotations

import pytest

from leaderboard.submissions.models import Submission

pytestmark = pytest.mark.django_db


def finish_all(api, finish_job, sub, losses):
    for job in sub.jobs.select_related("task").order_by("task__position"):
        finish_job(api, job, final_loss=losses[job.task.slug])


def test_a_finished_submission_lands_on_each_task_board_ranked_lower_loss_first(
        client, alice, bob, make_submission, runner_api, finish_job):
    good = make_submission(alice, name="alice-opt")
    poor = make_submission(bob, name="bob-opt")
    finish_all(runner_api, finish_job, good, {"opt-f1": 0.001, "opt-f2": 0.3, "opt-f3": 0.2})
    finish_all(runner_api, finish_job, poor, {"opt-f1": 0.05, "opt-f2": 0.1, "opt-f3": 0.2})
    good.refresh_from_db()
    assert good.status == Submission.Status.FINISHED and good.finished_at is not None
    f1 = client.get("/api/v1/benchmarks/opt-synthetic/leaderboard/").json()
    assert f1["task"] == "opt-f1" and f1["higher_is_better"] is False
    assert [(r["rank"], r["name"]) for r in f1["rows"]] == [(1, "alice-opt"), (2, "bob-opt")]
    f2 = client.get("/api/v1/benchmarks/opt-synthetic/leaderboard/?task=opt-f2").json()
    assert [r["name"] for r in f2["rows"]] == ["bob-opt", "alice-opt"]
    f3 = client.get("/api/v1/benchmarks/opt-synthetic/leaderboard/?task=opt-f3").json()
    assert [r["rank"] for r in f3["rows"]] == [1, 1], "equal values share a rank"
    page = client.get("/b/opt-synthetic/?task=opt-f2").content.decode()
    table = page[page.index('id="board"'):]
    assert table.index("bob-opt") < table.index("alice-opt")
    assert "final_loss" in page and "↓" in page


def test_the_board_sorts_by_another_metric_and_both_directions(client, alice, bob, make_submission, runner_api, finish_job):
    for who, loss in ((alice, 0.2), (bob, 0.1)):
        finish_all(runner_api, finish_job, make_submission(who, name=f"{who.username}-opt"),
                   {"opt-f1": loss, "opt-f2": loss, "opt-f3": loss})
    asc = client.get("/api/v1/benchmarks/opt-synthetic/leaderboard/?sort=submitted_at&dir=asc").json()
    assert [r["name"] for r in asc["rows"]] == ["alice-opt", "bob-opt"]
    desc = client.get("/api/v1/benchmarks/opt-synthetic/leaderboard/?sort=submitted_at&dir=desc").json()
    assert [r["name"] for r in desc["rows"]] == ["bob-opt", "alice-opt"]
    assert client.get("/api/v1/benchmarks/opt-synthetic/leaderboard/?dir=sideways").status_code == 400
    assert client.get("/api/v1/benchmarks/opt-synthetic/leaderboard/?task=nope").status_code == 404
    html = client.get("/b/opt-synthetic/?sort=final_x&dir=asc").content.decode()
    assert 'aria-sort="ascending"' in html


def test_private_results_stay_off_the_public_board_but_their_owner_sees_them(
        client, alice, make_submission, runner_api, finish_job):
    sub = make_submission(alice, name="secret-opt", visibility=Submission.Visibility.PRIVATE)
    finish_all(runner_api, finish_job, sub, {"opt-f1": 0.1, "opt-f2": 0.1, "opt-f3": 0.1})
    assert client.get("/api/v1/benchmarks/opt-synthetic/leaderboard/").json()["rows"] == []
    client.force_login(alice)
    assert [r["name"] for r in client.get("/api/v1/benchmarks/opt-synthetic/leaderboard/").json()["rows"]] == ["secret-opt"]


def test_the_home_page_shows_each_benchmark_with_its_leaders(client, alice, make_submission, runner_api, finish_job):
    finish_all(runner_api, finish_job, make_submission(alice, name="leader-opt"),
               {"opt-f1": 0.1, "opt-f2": 0.1, "opt-f3": 0.1})
    html = client.get("/").content.decode()
    assert "Optimizers: diffGrad" in html and "leader-opt" in html and "Denoising: Kodak" in html


def test_the_submission_page_and_its_status_feed_show_progress_and_results(
        client, alice, make_submission, runner_api, finish_job):
    sub = make_submission(alice, name="watched")
    job = sub.jobs.get(task__slug="opt-f1")
    runner_api.claim(job.pk)
    runner_api.heartbeat(job.pk, 1, progress=0.25)
    status = client.get(f"/s/{sub.pk}/status.json").json()
    assert status["status"] == "running"
    f1 = next(j for j in status["jobs"] if j["task"] == "opt-f1")
    assert f1["state"] == "running" and f1["progress"] == 0.25 and f1["runner"] == "gpu-node-1"
    html = client.get(f"/s/{sub.pk}/").content.decode()
    assert "live-status.js" in html and 'id="jobs"' in html


def test_the_runners_page_lists_nodes_and_queue_depth(client, runner_node, alice, make_submission, runner_api):
    sub = make_submission(alice)
    runner_api.claim(sub.jobs.first().pk)
    html = client.get("/runners/").content.decode()
    assert "gpu-node-1" in html and "online" in html and "runner.cpu" in html


def test_my_submissions_lists_only_mine_with_quota(client, alice, bob, make_submission):
    make_submission(alice, name="mine-1")
    make_submission(bob, name="bobs")
    client.force_login(alice)
    html = client.get("/me/submissions/").content.decode()
    assert "mine-1" in html and "bobs" not in html and "left today" in html


def test_a_user_signs_up_and_creates_an_api_token_shown_once(client):
    response = client.post("/accounts/signup/", {"username": "carol", "password1": "a-long-pass-phrase-9",
                                                 "password2": "a-long-pass-phrase-9"})
    assert response.status_code == 302
    html = client.post("/accounts/tokens/", {"name": "ci"}).content.decode()
    assert 'id="new-token">lb_' in html
    assert "id=\"new-token\"" not in client.get("/accounts/tokens/").content.decode()
