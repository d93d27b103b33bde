"""The transformer workload ``opt-text-transformer`` (docs/submissions.md, "Optimizers";
shared/PROTOCOLS.md, "Small transformer on 2 CPU cores"): CPython's pydoc text and its split, the
875,520-parameter model, validation bits per byte, the runner's warm-up and cosine schedule as the
sandboxed optimizer sees it (through the optimizer server's ``lr_scale``), and runs through the
path `runner run` takes, on budgets of a few steps."""
from __future__ import annotations

import hashlib
import json
import math
import platform
from pathlib import Path

import pytest
import torch

from runner.catalogue import catalogue_task
from runner.datasets import DATASETS
from runner.datasets.text import TOPICS_BYTES, TOPICS_COUNT, TOPICS_SHA256, text_split, topics_text
from runner.evaluate import LocalRun, evaluate, local_job_spec
from runner.metrics.text import bits_per_byte, lr_scale
from runner.opt_server import OptimizerServer
from runner.spec import ErrorKind, EvaluationError
from runner.tracks.training.text import TextBudget, evaluate_text, text_model, validation_bpb

TASK = "opt-text-transformer"
ADAM = Path(__file__).resolve().parents[2] / "runner" / "baselines" / "optimizers" / "adam.py"

# Writes each group's lr, as the step sees it, into that group's parameter.
RECORDS_LR = b'''import torch


class Records(torch.optim.Optimizer):
    def __init__(self, params, lr):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.fill_(float(group["lr"]))


def make_optimizer(params, lr=0.1):
    first, second = params
    return Records([{"params": [first]}, {"params": [second], "lr": 3 * lr}], lr=lr)
'''

NO_LR = b'''import torch


class NoLr(torch.optim.Optimizer):
    def __init__(self, params):
        super().__init__(params, {})
        self.wants_first_layer_stats = True

    def step(self, closure=None):
        return None


def make_optimizer(params):
    return NoLr(params)
'''


def serve(tmp_path, source: bytes, hparams: dict) -> OptimizerServer:
    path = tmp_path / "uploads" / "opt.py"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(source)
    server = OptimizerServer(path, hparams, work_dir=tmp_path / "work", time_limit_s=60, memory_bytes=8 << 30,
                             trust=False)
    (tmp_path / "work").mkdir()
    server.start([(1,), (1,)])
    return server


@pytest.mark.usefixtures("bwrap")
def test_lr_scale_sets_each_groups_lr_to_its_own_base_times_the_scale_before_the_step(tmp_path):
    with serve(tmp_path, RECORDS_LR, {"lr": 0.02}) as server:
        seen = []
        for step, scale in enumerate([0.5, 0.0, 1.0, 0.25], start=1):
            assert server.step(step, lambda: 0.0, evaluations_left=lambda: True, lr_scale=scale)
            seen.append([float(v) for values in server.shared.values for v in values])
        assert server.step(5, lambda: 0.0, evaluations_left=lambda: True)  # no scale: the last lr stays
        seen.append([float(v) for values in server.shared.values for v in values])
    expected = [[0.02 * s, 0.06 * s] for s in (0.5, 0.0, 1.0, 0.25, 0.25)]
    assert torch.equal(torch.tensor(seen), torch.tensor(expected, dtype=torch.float32))  # the float32 parameters


@pytest.mark.usefixtures("bwrap")
def test_a_group_without_an_lr_is_the_submissions_invalid_artifact_only_where_the_runner_schedules_it(tmp_path):
    with serve(tmp_path, NO_LR, {}) as server:
        assert server.wants == {"first_layer_stats"} and server.hooks == set()  # asked for, not offered
        assert server.step(1, lambda: 0.0, evaluations_left=lambda: True)  # no schedule: fine
        with pytest.raises(EvaluationError) as caught:
            server.step(2, lambda: 0.0, evaluations_left=lambda: True, lr_scale=0.5)
    assert caught.value.kind == ErrorKind.INVALID_ARTIFACT
    assert "param group 0" in caught.value.message and "numeric lr" in caught.value.message


def test_the_runner_refuses_to_send_a_scale_that_is_not_finite_and_non_negative():
    server = OptimizerServer(__file__, {}, work_dir=".", time_limit_s=1, memory_bytes=1, trust=False)
    for bad in (float("nan"), float("inf"), -0.1):
        with pytest.raises(ValueError, match="lr_scale"):
            server.step(1, lambda: 0.0, evaluations_left=lambda: True, lr_scale=bad)


# --------------------------------------------------------------------------------------------
# The text, the model, the metric and the schedule.
# --------------------------------------------------------------------------------------------
def test_the_text_is_the_pydoc_topics_in_key_order_split_90_10_contiguously_and_pinned_by_hash():
    from pydoc_data.topics import topics

    data, count = topics_text()
    assert count == len(topics) and data.decode("utf-8").startswith(topics[min(topics)])
    train, val = text_split(data)
    assert bytes(train) + bytes(val) == data and len(train) == 9 * len(data) // 10
    report = DATASETS["pydoc-topics"].verify()
    digest = hashlib.sha256(data).hexdigest()
    assert report.info["text_sha256"] == digest and report.info["python"] == platform.python_version()
    if platform.python_version() == "3.11.7":  # PROTOCOLS' figures, measured on this Python
        assert (count, len(data), digest) == (TOPICS_COUNT, TOPICS_BYTES, TOPICS_SHA256)
        assert (len(train), len(val)) == (419_505, 46_612) and report.warnings == []
    else:  # another CPython's text: a warning naming the hash, never an error
        assert digest != TOPICS_SHA256 and any(digest in w for w in report.warnings)
    assert DATASETS["pydoc-topics"].present("/nonexistent") and report.ok


def test_the_reader_hands_out_a_splits_non_overlapping_windows_in_order():
    reader = DATASETS["pydoc-topics"].open("/nonexistent", split="val", context=128)
    _, val = text_split(topics_text()[0])
    batches = list(reader.batches(100))
    assert [len(b) for b in batches] == [100, 100, 100, len(val) // 128 - 300]
    assert batches[1].inputs.shape == (100, 128) and batches[1].inputs.dtype.name == "int64"
    assert list(batches[1].index[:2]) == [12_800, 12_928] and bytes(batches[1].inputs[0].astype("uint8")) == \
        bytes(val[12_800:12_928])
    assert reader.env["split"] == "val" and reader.env["split_bytes"] == {"train": len(topics_text()[0]) - len(val),
                                                                           "val": len(val)}
    with pytest.raises(ValueError, match="train, val"):
        DATASETS["pydoc-topics"].open("/nonexistent", split="test")


def test_the_model_has_875520_parameters_and_each_position_sees_only_the_bytes_before_it():
    model = text_model(0).eval()
    assert sum(p.numel() for p in model.parameters()) == 875_520
    x = torch.randint(0, 256, (2, 128), generator=torch.Generator().manual_seed(1))
    changed = x.clone()
    changed[:, 100] = (changed[:, 100] + 1) % 256
    with torch.no_grad():
        a, b = model(x), model(changed)
    assert a.shape == (2, 128, 256)
    assert torch.equal(a[:, :100], b[:, :100]) and not torch.allclose(a[:, 100:], b[:, 100:])
    assert all(torch.equal(p, q) for p, q in zip(text_model(3).parameters(), text_model(3).parameters(), strict=True))
    assert not torch.equal(text_model(3).head.weight, text_model(4).head.weight)


def test_a_uniform_predictor_scores_8_bits_per_byte_on_the_validation_split():
    model = text_model(0)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()  # every byte equally likely
    _, val = text_split(topics_text()[0])
    assert validation_bpb(model, torch.from_numpy(val), 128) == pytest.approx(8.0, abs=1e-12)
    assert bits_per_byte(3 * math.log(2), 3) == pytest.approx(1.0) and bits_per_byte(math.log(256), 1) == 8.0
    with pytest.raises(ValueError, match="no window"):
        validation_bpb(model, torch.zeros(128, dtype=torch.uint8), 128)


def test_the_schedule_warms_up_linearly_then_decays_by_a_cosine_to_zero():
    assert lr_scale(1, 50, 800) == pytest.approx(1 / 50) and lr_scale(50, 50, 800) == 1.0
    assert lr_scale(51, 50, 800) == pytest.approx(0.5 * (1 + math.cos(math.pi / 750)))
    assert lr_scale(425, 50, 800) == pytest.approx(0.5) and lr_scale(800, 50, 800) == 0.0
    values = [lr_scale(k, 50, 800) for k in range(1, 801)]
    assert values[:50] == sorted(values[:50]) and values[49:] == sorted(values[49:], reverse=True)
    assert lr_scale(3, 0, 10) < 1.0 and lr_scale(1, 0, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi / 10)))
    with pytest.raises(ValueError):
        lr_scale(0, 50, 800)


def test_the_budget_comes_from_the_catalogue_and_a_test_may_shrink_it():
    budget = TextBudget.from_params(catalogue_task(TASK).params)
    assert (budget.steps, budget.batch_size, budget.context, budget.warmup_steps, budget.seeds, budget.threads) == \
        (800, 32, 128, 50, [0, 1, 2], 2)
    assert catalogue_task(TASK).time_limit_s >= 3 * 800 * 0.35 * 1.5  # three seeds at 0.35 s a step, with margin
    small = TextBudget.from_params({**catalogue_task(TASK).params, "steps": 20, "warmup_steps": 5, "seeds": 1})
    assert small.steps == 20 and small.seeds == [0]
    for bad in ({"steps": 10, "batch_size": 4, "warmup_steps": 11}, {"steps": 10, "batch_size": 4, "context": 256},
                {"batch_size": 4}):
        with pytest.raises(EvaluationError) as caught:
            TextBudget.from_params(bad)
        assert caught.value.kind == ErrorKind.RUNNER_ERROR


def test_runner_run_params_replace_the_catalogues_task_params_for_a_quick_check():
    spec = LocalRun([TASK], ADAM, {"lr": 1e-2}, params={"steps": 20, "warmup_steps": 5}).job_spec(TASK)
    assert spec.task.params == {**catalogue_task(TASK).params, "steps": 20, "warmup_steps": 5}
    assert local_job_spec(TASK, ADAM).task.params["steps"] == 800  # the catalogue's own stays as it was


# --------------------------------------------------------------------------------------------
# Runs: the sandboxed optimizer, the runner's loop.
# --------------------------------------------------------------------------------------------
RECORDS_GROUP_LR = b'''import json
import torch


class Recording(torch.optim.SGD):
    @torch.no_grad()
    def step(self, closure=None):
        with open("lrs.json", "a") as fh:  # the sandbox's scratch folder
            fh.write(json.dumps(self.param_groups[0]["lr"]) + "\\n")
        return super().step(closure)


def make_optimizer(params, lr=0.1):
    return Recording(params, lr=lr)
'''

# Adam, but it first tries what a submission beside the old loop could: read the validation text
# (to train on it), leave a forged result where a harness might read one, announce a score.
FORGES_ITS_OUTPUT = b'''import json
import os

import pydoc_data  # the standard library's folder is there, emptied
import torch

try:
    from pydoc_data.topics import topics
    READ = len(topics)
except ImportError:
    READ = 0
forged = {"metrics": {"val_bpb_mean": 0.01}, "val_bpb": [0.01] * 100}
for folder in (os.getcwd(), "/tmp"):
    with open(os.path.join(folder, "out.json"), "w") as fh:
        json.dump(forged, fh)
print("@progress 1.0 seed 0, step 20/20: val bpb 0.0100", flush=True)


def make_optimizer(params, lr=1e-2):
    if READ:
        raise RuntimeError(f"read {READ} topics of the validation text")
    return torch.optim.Adam(params, lr=lr)
'''

WANTS_A_HOOK = b'''import torch


def make_optimizer(params, lr=1e-3):
    optimizer = torch.optim.Adam(params, lr=lr)
    optimizer.wants_first_layer_stats = True
    return optimizer
'''

NAN_AFTER_TWO_STEPS = b'''import torch


class Breaks(torch.optim.SGD):
    @torch.no_grad()
    def step(self, closure=None):
        super().step(closure)
        self.state.setdefault("count", [0])[0] += 1
        if self.state["count"][0] == 2:
            for p in self.param_groups[0]["params"]:
                p.fill_(float("nan"))


def make_optimizer(params, lr=0.1):
    return Breaks(params, lr=lr)
'''

LBFGS = b'''import torch


def make_optimizer(params, lr=0.5, max_iter=3):
    return torch.optim.LBFGS(params, lr=lr, max_iter=max_iter)
'''

TINY = {"steps": 20, "batch_size": 4, "warmup_steps": 5, "eval_every": 20, "seeds": 1}


def job(path: Path, hparams: dict | None = None, **params):
    spec = local_job_spec(TASK, path, hparams or {})
    spec.task.params.update({**TINY, **params})
    return spec


def written(tmp_path, source: bytes, name: str = "opt.py") -> Path:
    path = tmp_path / "uploads" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(source)
    return path


def run_here(tmp_path, path: Path, hparams: dict | None = None, **params) -> dict:
    """evaluate_text with a work folder the test can read afterwards."""
    work = tmp_path / "work"
    work.mkdir()
    return evaluate_text(job(path, hparams, **params), path, work_dir=work, data_root=Path("/nonexistent"),
                         trust=False, device="cpu", progress=lambda fraction, message: None)


def failure(spec, path: Path) -> EvaluationError:
    with pytest.raises(EvaluationError) as caught:
        evaluate(spec, path, data_root="/nonexistent")
    return caught.value


@pytest.fixture(scope="module")
def adam_run(tmp_path_factory) -> dict:
    """Adam (lr 1e-2) for 20 steps of 4 windows, through the path `runner run` takes."""
    return evaluate(job(ADAM, {"lr": 1e-2}), ADAM, data_root="/nonexistent")


@pytest.mark.usefixtures("bwrap")
def test_the_optimizer_sees_the_runners_warmup_and_cosine_as_its_group_lr(tmp_path):
    doc = run_here(tmp_path, written(tmp_path, RECORDS_GROUP_LR), {"lr": 0.1}, steps=12, warmup_steps=3,
                   eval_every=12)
    seen = [json.loads(line) for line in (tmp_path / "work" / "optimizer-seed0" / "scratch" / "lrs.json")
            .read_text().splitlines()]
    assert seen == [0.1 * lr_scale(k, 3, 12) for k in range(1, 13)]
    assert seen[2] == pytest.approx(0.1) and seen[-1] == 0.0
    assert doc["env"]["lr_schedule"]["warmup_steps"] == 3 and doc["curves"]["seed_0"]["step"] == [0, 12]


@pytest.mark.usefixtures("bwrap")
def test_twenty_steps_of_adam_train_the_model_and_the_document_carries_what_the_boards_read(adam_run):
    metrics, curves, env = adam_run["metrics"], adam_run["curves"]["seed_0"], adam_run["env"]
    assert set(metrics) == {"val_bpb_mean", "val_bpb_std", "best_val_bpb_mean", "best_val_bpb_std",
                            "final_train_loss_mean", "runs"} and metrics["runs"] == 1
    assert curves["step"] == [0, 20] and curves["samples"] == [0, 80] and curves["tokens"] == [0, 80 * 128]
    assert metrics["val_bpb_mean"] == curves["val_bpb"][-1] < min(8.0, curves["val_bpb"][0])
    assert curves["train_loss"][-1] < curves["train_loss"][0] and 0 < curves["seconds"][-1]
    assert env["loop"] == "runner" and env["sandbox"].startswith("bwrap") and env["threads"] == 2
    assert env["python"] == platform.python_version() and env["text_sha256"] == topics_sha256()
    assert env["budget"]["steps"] == 20 and env["parameters"] == 875_520 and env["closure"] is False
    assert env["evaluations"] == 20 and "val_bpb_mean" in env["metric_notes"]


def topics_sha256() -> str:
    return hashlib.sha256(topics_text()[0]).hexdigest()


@pytest.mark.usefixtures("bwrap")
def test_a_submission_that_forges_its_output_scores_what_the_same_optimizer_scores_honestly(adam_run, tmp_path):
    forged = evaluate(job(written(tmp_path, FORGES_ITS_OUTPUT), {"lr": 1e-2}), tmp_path / "uploads" / "opt.py",
                      data_root="/nonexistent")
    assert forged["metrics"] == adam_run["metrics"]
    assert {k: v for k, v in forged["curves"]["seed_0"].items() if k != "seconds"} == \
        {k: v for k, v in adam_run["curves"]["seed_0"].items() if k != "seconds"}


@pytest.mark.usefixtures("bwrap")
def test_an_optimizer_that_wants_an_image_tasks_hook_is_invalid_here_naming_the_task(tmp_path):
    path = written(tmp_path, WANTS_A_HOOK)
    error = failure(job(path), path)
    assert error.kind == ErrorKind.INVALID_ARTIFACT
    assert "first_layer_stats" in error.message and TASK in error.message


@pytest.mark.usefixtures("bwrap")
def test_weights_left_nan_are_not_finite_naming_the_step_whose_loss_showed_it(tmp_path):
    path = written(tmp_path, NAN_AFTER_TWO_STEPS)
    error = failure(job(path, steps=5, eval_every=100), path)
    assert error.kind == ErrorKind.NOT_FINITE and "step 3 of 5 (seed 0)" in error.message


@pytest.mark.usefixtures("bwrap")
def test_lbfgs_runs_with_each_closure_a_counted_forward_and_backward_on_the_steps_batch(tmp_path):
    doc = run_here(tmp_path, written(tmp_path, LBFGS), steps=3, eval_every=3, warmup_steps=0)
    curves = doc["curves"]["seed_0"]
    assert doc["env"]["closure"] is True and 3 < doc["env"]["evaluations"] <= 3 * 4
    assert curves["step"] == [0, 3] and curves["val_bpb"][-1] < curves["val_bpb"][0]
