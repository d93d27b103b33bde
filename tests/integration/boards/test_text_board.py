"""The transformer workload's board (opt-text-transformer): ranked by validation bits per byte,
lower first, with its interval, from the result documents the runner writes
(runner/tracks/training/text.py)."""
from __future__ import annotations

import pytest

from leaderboard.benchmarks.models import Task
from runner.catalogue import catalogue_task
from runner.spec import make_result, validate_result
from tests.integration.boards.test_track_charts import finished

pytestmark = pytest.mark.django_db
TASK = "opt-text-transformer"


def text_result(bpb: list[float]) -> dict:
    """A result of the runner's shape: per seed a curve with evaluations at steps 0, 400, 800."""
    curves = {f"seed_{i}": {"step": [0, 400, 800], "samples": [0, 12800, 25600], "tokens": [0, 1638400, 3276800],
                            "seconds": [0.0, 100.0, 200.0], "train_loss": [5.6, 1.6, 1.3],
                            "val_bpb": [8.05, value + 0.2, value]} for i, value in enumerate(bpb)}
    mean = sum(bpb) / len(bpb)
    metrics = {"val_bpb_mean": mean, "val_bpb_std": 0.01, "best_val_bpb_mean": mean, "best_val_bpb_std": 0.01,
               "final_train_loss_mean": 1.3, "runs": float(len(bpb))}
    doc = make_result(TASK, metrics, ci95={"val_bpb_mean": [mean - 0.05, mean + 0.05]}, curves=curves,
                      env={"loop": "runner", "text_sha256": "37d06970"})
    return validate_result(doc, TASK)


def test_the_board_ranks_lower_bits_per_byte_first(client, alice, catalogue):
    task = Task.objects.get(slug=TASK)
    assert (task.primary_metric, task.higher_is_better) == ("val_bpb_mean", False) == \
        (catalogue_task(TASK).primary_metric, catalogue_task(TASK).higher_is_better)
    finished(alice, TASK, "sgd-like", {TASK: text_result([2.44, 2.46, 2.45])}, baseline=True)
    finished(alice, TASK, "adam-like", {TASK: text_result([1.78, 1.79, 1.80])}, baseline=True)
    finished(alice, TASK, "clip-like", {TASK: text_result([2.06, 2.05, 2.07])})
    response = client.get(f"/b/{TASK}/")
    assert response.status_code == 200
    html = response.content.decode()
    table = html[html.index('<table class="board" id="board">'):]
    positions = [table.index(f">{name}</a>") for name in ("adam-like", "clip-like", "sgd-like")]
    assert positions == sorted(positions), "lower validation bpb ranks first"
    assert "val_bpb_mean (lower is better)" in html  # the ranking chart says which way is better
