"""`runner run`'s rules for one file on several tasks (runner.evaluate.LocalRun): each task once,
imagenet-val before imagenet-c, and imagenet-c's relative mCE from this run's clean top-1."""
from __future__ import annotations

import pytest

from runner.evaluate import LocalRun

# The opening bytes of an ONNX ModelProto (ir_version, then a producer name): enough for the
# format sniffer, which is all a job spec needs of the file.
ONNX_HEAD = b"\x08\x07\x12\x04test" + b"\x00" * 32


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(ONNX_HEAD)
    return path


def test_each_task_runs_once_and_imagenet_val_moves_before_imagenet_c(model_file):
    plan = LocalRun(["imagenet-a", "imagenet-c", "imagenet-a", "geode", "imagenet-val"], model_file)
    assert plan.tasks == ["imagenet-a", "imagenet-val", "imagenet-c", "geode"]


def test_imagenet_c_takes_the_clean_top1_this_run_measured_on_imagenet_val(model_file):
    plan = LocalRun(["imagenet-val", "imagenet-c"], model_file)
    assert "clean_top1" not in plan.job_spec("imagenet-c").task.params
    plan.record("imagenet-val", {"metrics": {"top1": 76.5, "top5": 93.0}})
    assert plan.job_spec("imagenet-c").task.params["clean_top1"] == 76.5
    assert "clean_top1" not in plan.job_spec("imagenet-val").task.params


def test_a_clean_top1_in_the_hyperparameters_wins_over_the_measured_one(model_file):
    plan = LocalRun(["imagenet-val", "imagenet-c"], model_file, {"clean_top1": 80.0})
    plan.record("imagenet-val", {"metrics": {"top1": 76.5, "top5": 93.0}})
    spec = plan.job_spec("imagenet-c")
    assert "clean_top1" not in spec.task.params and spec.submission.hparams["clean_top1"] == 80.0


def test_an_unknown_task_is_refused_by_name(model_file):
    with pytest.raises(ValueError, match="imagenet-z"):
        LocalRun(["imagenet-z"], model_file).job_spec("imagenet-z")
