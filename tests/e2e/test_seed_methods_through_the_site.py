"""Issue 16 end to end: the seed methods reach their boards the way a maintainer seeds them —
`manage.py seed_baselines --benchmark B --optimizer FILE` on the live site, Celery on a real Redis
broker, a real `runner work` process evaluating in the sandbox — not only through `runner run`.

- opt-text-transformer: Adam (a reference optimizer) and SGD with coordinate-wise clipping (a seed
  method) on a budget a CPU test affords (the catalogue's is 3 × 800 steps): both finish, rank by
  validation bits per byte lower first, with a 95% interval over their two seeds, and the board
  shows the time to the reference target;
- opt-digits: TrAct + SGD, which asks the runner's loop for ``first_layer_stats`` every step, and
  the EL2N diet, which asks it for every training example's score: both finish on the board, and
  their results say which hooks they used.
"""
from __future__ import annotations

import pytest
from django.core.management import call_command

from leaderboard.benchmarks.models import Task
from leaderboard.boards.models import BoardEntry
from leaderboard.boards.selectors import board_time_to_target
from leaderboard.submissions.models import Submission
from tests.e2e.test_worker_end_to_end import lifecycle_settings, redis_url, runners, wait_for  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TEXT_BUDGET = {"steps": 6, "batch_size": 4, "context": 128, "warmup_steps": 2, "eval_every": 3, "seeds": 2,
               "threads": 2}
DIGITS_BUDGET = {"epochs": 3, "batch_size": 64, "seeds": 2, "target_top1": 50.0}  # the diet scores at step 42 of 63


def seeded(benchmark: str, *files: str) -> list[Submission]:
    call_command("seed_baselines", "--benchmark", benchmark, *[a for f in files for a in ("--optimizer", f)])
    subs = list(Submission.objects.filter(benchmark__slug=benchmark, is_baseline=True).order_by("pk"))
    assert len(subs) == len(files), [s.name for s in subs]
    return subs


def finished(subs: list[Submission], node, what: str, timeout: float) -> None:
    ended = (Submission.Status.FINISHED, Submission.Status.FAILED, Submission.Status.REJECTED)
    wait_for(lambda: all(Submission.objects.get(pk=s.pk).status in ended for s in subs), timeout, reap=True,
             what=what, runners=[node])
    for sub in subs:
        sub.refresh_from_db()
        assert sub.status == Submission.Status.FINISHED, (sub.name, sub.error_code, sub.error_message)


def test_adam_and_clipped_sgd_rank_on_the_transformer_board_with_intervals_through_runner_work(
        alice, redis_url, runners, lifecycle_settings, client):  # noqa: F811
    Task.objects.filter(slug="opt-text-transformer").update(params=TEXT_BUDGET)
    node = runners("node-text", redis_url)
    subs = seeded("opt-text-transformer", "adam.py", "clip_sgd.py")
    finished(subs, node, "the transformer jobs", 600)

    entries = list(BoardEntry.objects.filter(task__slug="opt-text-transformer").order_by("value"))
    assert {e.submission_name for e in entries} == {s.name for s in subs}
    for entry in entries:
        result = entry.submission.jobs.get().result
        assert result["env"]["loop"] == "runner" and result["env"]["sandbox"].startswith("bwrap")
        assert result["env"]["hooks"] == [] and result["metrics"]["runs"] == 2
        assert entry.value == pytest.approx(result["metrics"]["val_bpb_mean"])
        assert entry.ci_low is not None and entry.ci_low <= entry.value <= entry.ci_high  # two seeds: an interval
    # the hyperparameters the manifest gives this board, not the optimizer's defaults
    hparams = {s.name: s.hparams for s in subs}
    assert {"lr": 10, "momentum": 0.9, "c": 0.1} in hparams.values() and {"lr": 0.01} in hparams.values()

    page = client.get("/b/opt-text-transformer/")
    assert page.status_code == 200
    html = page.content.decode()
    rows = html[html.index('<table class="board" id="board">'):]
    first, second = (rows.index(e.submission_name) for e in entries)
    assert first < second, "lower bits per byte ranks first"
    times = board_time_to_target(task=Task.objects.get(slug="opt-text-transformer"),
                                 submission_ids=[e.submission_id for e in entries])
    assert times.target is not None  # set from the reference optimizer's curves (Adam here)


def test_hook_based_seed_methods_train_on_opt_digits_through_the_site(
        alice, redis_url, runners, lifecycle_settings):  # noqa: F811
    Task.objects.filter(slug="opt-digits").update(params=DIGITS_BUDGET)
    node = runners("node-digits", redis_url)
    subs = seeded("opt-digits", "tract_sgd.py", "el2n_diet.py")
    finished(subs, node, "the opt-digits seed methods", 600)

    hooks = {}
    for sub in subs:
        result = sub.jobs.get().result
        hooks[sub.artifact_name] = result["env"]["hooks"]
        assert 10 < result["metrics"]["test_top1_mean"] <= 100  # above chance: it trained
        assert BoardEntry.objects.filter(submission=sub, task__slug="opt-digits").exists()
        if sub.artifact_name == "el2n_diet.py":  # one scoring of all 1,347 training examples, each seed
            assert [seed["scored"] for seed in result["env"]["samples"]] == [1347, 1347]
    assert hooks == {"tract_sgd.py": ["first_layer_stats"], "el2n_diet.py": ["el2n_scores"]}
