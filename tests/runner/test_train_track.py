"""The optimizer training tasks end to end: a submitted make_optimizer trains the platform's model
in the sandbox on the training split only; the runner evaluates the weights it leaves and builds
the result document. Budgets are cut down through the job's params so each run takes seconds."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import sklearn
import torch
from safetensors.torch import save_file

from runner.datasets import DATASETS, digits_split
from runner.evaluate import local_job_spec
from runner.sandboxed import training
from runner.spec import ErrorKind, EvaluationError, validate_result
from runner.tracks import train
from runner.tracks.train import bench_training, evaluate_training
from runner.tracks.training import evaluation, launch, tasks

from . import sources

pytestmark = pytest.mark.usefixtures("bwrap")
BASELINES = Path(train.__file__).resolve().parent.parent / "baselines" / "optimizers"

# Reads what the sandbox shows it and reports it through the error message.
SPY = b'''import os


def make_optimizer(params, lr=0.1, look_for=()):
    here = os.path.dirname(__file__)
    found = [os.path.exists(path) for path in look_for]
    raise RuntimeError(f"SEEN {sorted(os.listdir(here))} FOUND {found}")
'''

# Leaves the weights infinite in the very last step: no later loss shows it, the weights do.
BREAKS_AT_THE_END = b'''import torch


class LastStepBreaks(torch.optim.SGD):
    steps = 0

    def step(self, closure=None):
        super().step(closure)
        LastStepBreaks.steps += 1
        if LastStepBreaks.steps == 21:
            with torch.no_grad():
                self.param_groups[0]["params"][-1].fill_(float("inf"))


def make_optimizer(params, lr=0.01):
    return LastStepBreaks(params, lr=lr)
'''


def job(task: str, path: Path, hparams: dict | None = None, *, time_limit_s: int | None = None, **params):
    spec = local_job_spec(task, path, hparams or {}, time_limit_s=time_limit_s)
    spec.task.params.update(params)
    return spec


def run(spec, path: Path, work_dir: Path, data_root: Path | str = "/nonexistent", progress=None) -> dict:
    work_dir.mkdir(parents=True)
    result = evaluate_training(spec, path, work_dir=work_dir, data_root=Path(data_root), trust=False,
                               device="cpu", progress=progress or (lambda fraction, message: None))
    return validate_result(result, spec.task.slug)


def failure(spec, path: Path, work_dir: Path, data_root: Path | str = "/nonexistent") -> EvaluationError:
    with pytest.raises(EvaluationError) as caught:
        run(spec, path, work_dir, data_root)
    return caught.value


@pytest.fixture
def fake_cifar10(tmp_path) -> Path:
    root = tmp_path / "data"
    DATASETS["cifar-10-batches-py"].fake(root, n_per_class=1)
    return root


def test_adam_trains_the_digits_cnn_and_the_result_carries_every_key_the_boards_read(tmp_path):
    path = BASELINES / "adam.py"
    beats = []
    result = run(job("opt-digits", path, {"lr": 0.001}, epochs=2, seeds=2), path, tmp_path / "job",
                 progress=lambda fraction, message: beats.append((fraction, message)))

    metrics, curves, env = result["metrics"], result["curves"], result["env"]
    assert set(curves) == {"seed_0", "seed_1"}
    for name, curve in curves.items():
        assert curve["epoch"] == [1, 2]
        assert len(curve["train_loss"]) == len(curve["test_top1"]) == len(curve["seconds"]) == 2
        assert curve["train_loss"][1] < curve["train_loss"][0]
        assert 0 < curve["seconds"][0] < curve["seconds"][1]
        assert curve["samples"] == [64 * (1347 // 64), 2 * 64 * (1347 // 64)]  # batch × steps × epochs
        seed = result["breakdown"]["per_seed"][name]
        assert seed["test_top1"] == curve["test_top1"][-1] and seed["best_top1"] == max(curve["test_top1"])
    assert curves["seed_0"]["train_loss"] != curves["seed_1"]["train_loss"]  # seeds are real
    finals = [c["test_top1"][-1] for c in curves.values()]
    assert metrics["test_top1_mean"] == pytest.approx(np.mean(finals))
    assert metrics["test_top1_std"] == pytest.approx(np.std(finals, ddof=1))
    assert metrics["test_top1_mean"] > 90  # Adam at lr 1e-3 learns digits in two epochs
    assert metrics["runs_reaching_target"] == 2 and metrics["epochs_to_target_mean"] in (1.0, 1.5, 2.0)
    low, high = result["ci95"]["test_top1_mean"]
    assert low <= metrics["test_top1_mean"] <= high
    assert env["sandbox"] == "bwrap" and env["seeds"] == [0, 1] and env["synthetic_data"] is False
    assert env["precision"] == "float32" and env["target_top1"] == 95.0
    assert env["dataset"] == "sklearn-digits" and env["dataset_checksum"].startswith("sha256:")
    assert env["budget"]["epochs"] == 2 and env["budget"]["steps_per_epoch"] == 1347 // 64
    timing, budget = result["timing"], env["budget"]
    assert timing["train_s"] == pytest.approx(sum(c["seconds"][-1] for c in curves.values()), abs=1e-3)
    trained = budget["items_per_epoch"] * budget["epochs"] * budget["seeds"]
    assert timing["items_per_s"] == pytest.approx(trained / timing["train_s"], rel=1e-2)
    assert timing["sandbox_s"] + timing["eval_s"] <= timing["wall_s"] + 1e-3  # training, then scoring
    fractions = [f for f, _ in beats]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("seed 1, epoch 2/2" in message for _, message in beats)  # the child's @progress lines


def test_the_same_submission_and_seed_give_identical_metrics_and_weights(tmp_path):
    path = tmp_path / "noisy.py"
    path.write_bytes(sources.NOISY_SGD)
    spec = job("opt-digits", path, {"lr": 0.05, "noise": 0.001}, epochs=2, seeds=1)
    first = run(spec, path, tmp_path / "first")
    second = run(spec, path, tmp_path / "second")

    def timeless(doc):
        metrics = {k: v for k, v in doc["metrics"].items() if k != "seconds_to_target_mean"}
        curves = {s: {k: v for k, v in c.items() if k != "seconds"} for s, c in doc["curves"].items()}
        return metrics, curves, doc["breakdown"]["per_seed"]["seed_0"]["weights_sha256"]

    assert timeless(first) == timeless(second)


def test_the_optimizers_sandbox_sees_no_data_of_either_split(tmp_path, fake_cifar10):
    path = tmp_path / "spy.py"
    path.write_bytes(SPY)
    test_batch = fake_cifar10 / "cifar-10-batches-py" / "test_batch"
    train_batch = fake_cifar10 / "cifar-10-batches-py" / "data_batch_1"
    # scikit-learn's bundled digits sit inside the interpreter's (read-only) environment
    digits = Path(sklearn.__file__).parent / "datasets" / "data" / "digits.csv.gz"
    assert test_batch.is_file() and train_batch.is_file() and digits.is_file()
    look_for = [str(test_batch), str(train_batch), str(digits), str(Path(sklearn.__file__))]
    error = failure(job("opt-cifar10-resnet18", path, {"look_for": look_for}, epochs=1, seeds=1),
                    path, tmp_path / "job", fake_cifar10)
    assert error.kind == ErrorKind.RUNTIME_ERROR
    assert "SEEN ['optimizer_loader.py', 'optimizer_server.py', 'rules.py', 'submission.py'] FOUND [False, False, False, True]" in error.message


def test_the_staged_input_holds_exactly_the_training_rows_of_the_fixed_split(tmp_path):
    task = tasks.training_task("opt-digits")
    budget = tasks.Budget.from_params({"epochs": 1, "batch_size": 64, "seeds": 1})
    splits = tasks.load_splits(task, tmp_path, budget)
    (tmp_path / "job").mkdir()
    inputs = launch.stage_inputs(tmp_path / "job", BASELINES / "adam.py", tasks.harness_config(task, budget, splits),
                                splits)
    train_images, train_labels, test_images, _ = digits_split(0.25, 0)
    np.testing.assert_array_equal(np.load(inputs / "train_images.npy")[..., 0], train_images)
    np.testing.assert_array_equal(np.load(inputs / "train_labels.npy"), train_labels)
    assert len(train_images) + len(test_images) == 1797 and len(test_images) == 450


def test_cifar10_training_scores_the_final_weights_on_the_cifar10_c_files_present(tmp_path, fake_cifar10):
    corrupted = DATASETS["CIFAR-10-C"].fake(fake_cifar10, n_per_class=1, extras=False)
    kept = ("gaussian_noise", "fog")  # two of the 15 keep the test fast; the rest are missing
    for array in corrupted.glob("*.npy"):
        if array.stem not in (*kept, "labels"):
            array.unlink()
    path = BASELINES / "sgdm.py"
    result = run(job("opt-cifar10-resnet18", path, {"lr": 0.01, "momentum": 0.9}, epochs=1, seeds=1,
                     batch_size=16), path, tmp_path / "job", fake_cifar10)

    metrics, breakdown, env = result["metrics"], result["breakdown"], result["env"]
    assert 0 <= metrics["test_top1_mean"] <= 100 and metrics["test_top1_std"] == 0.0
    assert metrics["cifar10c_corruption_error"] == pytest.approx(100 - metrics["cifar10c_top1"])
    table = breakdown["per_corruption"]
    assert set(table) == set(kept) and all(set(row) == {"1", "2", "3", "4", "5"} for row in table.values())
    assert np.mean([v for row in table.values() for v in row.values()]) == pytest.approx(metrics["cifar10c_top1"])
    assert env["cifar10c"]["present"] is True and env["cifar10c"]["synthetic_data"] is True
    assert any("contrast.npy is missing" in w for w in env["cifar10c"]["dataset_warnings"])
    assert env["synthetic_data"] is True and env["budget"]["steps_per_epoch"] == 50 // 16
    assert "crop" in env["augmentation"] and len(env["standardization"]["mean"]) == 3
    assert "test_top1_mean" not in result["ci95"]  # one seed: no interval
    assert result["curves"]["seed_0"]["epoch"] == [1]


def test_a_syntax_error_is_an_invalid_artifact_naming_the_line(tmp_path):
    path = tmp_path / "broken.py"
    path.write_bytes(sources.SYNTAX_ERROR)
    error = failure(job("opt-digits", path, epochs=1, seeds=1), path, tmp_path / "job")
    assert error.kind == ErrorKind.INVALID_ARTIFACT and "syntax error at line 4" in error.message


def test_a_file_without_make_optimizer_is_an_invalid_artifact_saying_what_to_add(tmp_path):
    path = tmp_path / "no_entry.py"
    path.write_bytes(sources.NO_ENTRY_POINT)
    error = failure(job("opt-digits", path, epochs=1, seeds=1), path, tmp_path / "job")
    assert error.kind == ErrorKind.INVALID_ARTIFACT
    assert "def make_optimizer(params, **hparams)" in error.message


def test_hyperparameters_that_do_not_fit_make_optimizer_name_the_accepted_ones(tmp_path):
    path = tmp_path / "sgd.py"
    path.write_bytes(sources.SGD)
    error = failure(job("opt-digits", path, {"lr": 0.1, "betas": [0.9, 0.99]}, epochs=1, seeds=1), path,
                    tmp_path / "job")
    assert error.kind == ErrorKind.BAD_HPARAMS
    assert "betas" in error.message and "It accepts: lr, momentum." in error.message


def test_an_exception_in_step_is_a_runtime_error_naming_the_epoch_step_and_line(tmp_path):
    path = tmp_path / "raises.py"
    path.write_bytes(sources.RAISES_IN_STEP)
    error = failure(job("opt-digits", path, {"lr": 0.1}, epochs=1, seeds=1), path, tmp_path / "job")
    assert error.kind == ErrorKind.RUNTIME_ERROR
    assert "optimizer.step() at epoch 1, step 1 of 21 (seed 0)" in error.message
    assert "ZeroDivisionError: division by zero (line 6 in step)" in error.message


def test_a_loss_that_becomes_nan_is_not_finite_at_that_epoch_and_step(tmp_path):
    path = tmp_path / "nan.py"
    path.write_bytes(sources.GOES_TO_NAN)
    error = failure(job("opt-digits", path, {"lr": 0.01}, epochs=2, seeds=1), path, tmp_path / "job")
    assert error.kind == ErrorKind.NOT_FINITE
    assert "the training loss became nan at epoch 1, step 6 of 21 (seed 0)" in error.message
    assert "lower the learning rate" in error.message


def test_weights_left_infinite_by_the_last_step_are_not_finite(tmp_path):
    path = tmp_path / "late.py"
    path.write_bytes(BREAKS_AT_THE_END)
    error = failure(job("opt-digits", path, {"lr": 0.01}, epochs=1, seeds=1), path, tmp_path / "job")
    assert error.kind == ErrorKind.NOT_FINITE
    assert "after epoch 1 (seed 0) the weights classifier.bias hold NaN or infinity" in error.message


def test_a_run_past_its_time_limit_is_a_timeout_and_the_next_job_still_works(tmp_path):
    slow = tmp_path / "slow.py"
    slow.write_bytes(sources.SLOW_SGD)
    error = failure(job("opt-digits", slow, {"lr": 0.05, "delay": 1.0}, time_limit_s=6, epochs=1, seeds=1), slow,
                    tmp_path / "slow-job")
    assert error.kind == ErrorKind.TIMEOUT and "time limit of 6 s" in error.message

    path = BASELINES / "adam.py"
    result = run(job("opt-digits", path, {"lr": 0.001}, epochs=1, seeds=1), path, tmp_path / "next-job")
    assert result["metrics"]["test_top1_mean"] > 50


def test_a_pickled_checkpoint_in_scratch_is_refused_without_being_unpickled(tmp_path):
    model = training.build_model("digits-cnn", 10, 1, 0)
    expected = evaluation.expected_state(model)
    torch.save(model.state_dict(), tmp_path / "ckpt.safetensors")
    with pytest.raises(EvaluationError) as caught:
        evaluation.load_weights(tmp_path, "ckpt.safetensors", expected, 1 << 20, "epoch 1 (seed 0)")
    assert caught.value.kind == ErrorKind.WRONG_OUTPUT and "not a readable safetensors file" in caught.value.message

    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["classifier.weight"] = state["classifier.weight"][:, :10].contiguous()
    save_file(state, tmp_path / "shrunk.safetensors")
    with pytest.raises(EvaluationError) as caught:
        evaluation.load_weights(tmp_path, "shrunk.safetensors", expected, 1 << 20, "epoch 1 (seed 0)")
    assert caught.value.kind == ErrorKind.WRONG_OUTPUT and "classifier.weight" in caught.value.message

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "good.safetensors")
    loaded, digest = evaluation.load_weights(tmp_path, "good.safetensors", expected, 1 << 20, "epoch 1 (seed 0)")
    assert digest == hashlib.sha256((tmp_path / "good.safetensors").read_bytes()).hexdigest()
    assert torch.equal(loaded["classifier.weight"], model.state_dict()["classifier.weight"])


def test_the_bench_clock_alternates_harness_windows_with_pure_step_windows_outside_its_timing(monkeypatch):
    from runner.sandboxed import training as program

    now = [0.0]
    monkeypatch.setattr(program, "CLOCK", lambda: now[0])
    between: list[float] = []

    def pure_window(spent: float) -> None:
        between.append(spent)
        now[0] += 100.0  # the pure side's time is not the harness's

    clock = program.BenchClock(warmup=1, seconds=1.0, window=0.3, between=pure_window)
    ticks = 0
    while True:
        ticks += 1
        now[0] += 0.125  # each harness step takes 0.125 s (exact in binary)
        if clock.tick(64):
            break
    # Windows end at the first step past 0.3 s: 0.375 s each, the last cut by what is left (0.25).
    assert between == [0.375, 0.375, 0.25]
    assert clock.elapsed == 1.0 and clock.windows == 3
    assert clock.timed_steps == ticks - 1 and clock.items == 64 * (ticks - 1)


def test_the_sandboxed_training_programs_bench_interleaves_its_windows_too(tmp_path):
    """The GPU path's bench (the loop in the sandboxed training program), run here on the CPU."""
    task = tasks.training_task("opt-digits")
    budget = tasks.Budget.from_params({**train.catalogue_task("opt-digits").params, "seeds": 1})
    splits = train.bench_splits(task, tmp_path / "none", budget, tmp_path / "data")
    config = tasks.harness_config(task, budget, splits, epochs=1)
    work_dir = tmp_path / "job"
    work_dir.mkdir()
    inputs = launch.stage_inputs(work_dir, train.REFERENCE_OPTIMIZER, config, splits)
    doc, _ = launch.run_program("bench", work_dir, inputs, hparams=train.REFERENCE_HPARAMS, device="cpu", trust=True,
                                time_limit_s=300, memory_bytes=task.memory_bytes, scratch_bytes=1 << 28,
                                progress=train.no_progress, span=(0.0, 1.0), cancel=None,
                                extra=["--seconds", "1.0", "--warmup", "2"])
    assert doc["windows"] == training.BENCH_WINDOWS and doc["pure_s"] >= doc["harness_s"] >= 1.0
    assert doc["ratio"] == pytest.approx(doc["train_items_per_s"] / doc["pure_step_items_per_s"])
    assert doc["harness_steps"] > 0 and doc["pure_steps"] > 0 and doc["device_name"] == "cpu"


def test_bench_training_compares_the_harness_loop_with_a_pure_step_on_digits():
    report = bench_training("opt-digits", device="cpu", data_root="/nonexistent", seconds=2.0)
    batch = report["batch_size"]  # each rate is the items of its timed steps over their seconds
    assert report["train_items_per_s"] == pytest.approx(report["harness_steps"] * batch / report["harness_s"])
    assert report["pure_step_items_per_s"] == pytest.approx(report["pure_steps"] * batch / report["pure_s"])
    assert report["harness_s"] + report["pure_s"] <= report["wall_s"] + 0.01  # both inside the run
    assert report["ratio"] == pytest.approx(report["train_items_per_s"] / report["pure_step_items_per_s"])
    assert 0.2 < report["ratio"] < 1.5
    assert report["harness_steps"] > 0 and report["pure_steps"] > 0 and report["warmup_steps"] == 2
    # Interleaved: each harness window is followed by a pure-step window at least as long.
    assert report["windows"] == 6 and report["pure_s"] >= report["harness_s"]
    assert report["device"] == "cpu" and report["synthetic_data"] is False and report["model"] == "digits-cnn"
