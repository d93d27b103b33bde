"""The optimizer training track's pieces that need no sandbox: metrics over seeds, the checks on
what the child reports, the device augmentation, and the catalogue's budgets."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from runner.catalogue import CATALOGUE
from runner.metrics.training import SeedRun, summarize, t_interval
from runner.sandboxed import training
from runner.spec import ErrorKind, EvaluationError, make_result, validate_result
from runner.tracks.training.evaluation import runs_from, score_corruptions
from runner.tracks.training.tasks import TRAINING_SETTINGS, Budget, Splits, training_task
from runner.tracks.training.text import TEXT_TASKS


def seed_run(seed: int, top1: list[float], seconds: list[float] | None = None) -> SeedRun:
    seconds = seconds or [float(i + 1) for i in range(len(top1))]
    return SeedRun(seed, [1.0 / (i + 1) for i in range(len(top1))], seconds, list(top1), f"sha-{seed}")


def test_every_optimizer_training_task_of_the_catalogue_has_a_model_and_a_budget():
    slugs = {t.slug for b in CATALOGUE for t in b.tasks if b.kind == "optimizer" and not t.slug.startswith("opt-f")}
    assert slugs == set(TRAINING_SETTINGS) | set(TEXT_TASKS)  # the text task's model and budget: its own module
    for bench in CATALOGUE:
        for task in bench.tasks:
            if task.slug in TRAINING_SETTINGS:
                budget = Budget.from_params(task.params)
                assert budget.epochs == task.params["epochs"] and len(budget.seeds) == task.params["seeds"]


def test_the_t_interval_uses_students_quantiles_and_stays_within_percentages():
    for n in range(2, 40):
        values = list(np.linspace(90.0, 92.0, n))
        low, high = t_interval(values)
        half = stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / np.sqrt(n)
        assert high - low == pytest.approx(2 * half, rel=0.04 if n > 31 else 1e-3)
    assert t_interval([50.0]) is None
    assert t_interval([99.0, 100.0], 0.0, 100.0)[1] == 100.0


def test_a_run_that_never_reaches_the_target_is_counted_and_left_out_of_the_means():
    runs = [seed_run(0, [80.0, 96.0, 97.0], [2.0, 4.0, 6.0]), seed_run(1, [70.0, 90.0, 94.0]),
            seed_run(2, [96.0, 95.0, 98.0], [3.0, 6.0, 9.0])]
    metrics, ci95, breakdown = summarize(runs, 95.0)

    assert metrics["test_top1_mean"] == pytest.approx(np.mean([97.0, 94.0, 98.0]))
    assert metrics["test_top1_std"] == pytest.approx(np.std([97.0, 94.0, 98.0], ddof=1))
    assert metrics["best_top1_mean"] == pytest.approx(np.mean([97.0, 94.0, 98.0]))
    assert metrics["runs_reaching_target"] == 2 and metrics["runs"] == 3
    assert metrics["epochs_to_target_mean"] == 1.5  # epochs 2 and 1
    assert metrics["seconds_to_target_mean"] == 3.5  # 4 s and 3 s
    assert breakdown["per_seed"]["seed_1"]["reached_target"] is False
    assert breakdown["per_seed"]["seed_1"]["epochs_to_target"] is None
    assert breakdown["per_seed"]["seed_2"]["best_epoch"] == 3
    assert set(ci95) == {"test_top1_mean", "best_top1_mean", "epochs_to_target_mean", "seconds_to_target_mean"}
    validate_result(make_result("opt-digits", metrics, ci95=ci95, breakdown=breakdown), "opt-digits")


def test_samples_to_target_reads_each_runs_sample_counter_at_the_first_epoch_reaching_the_target():
    fixed = seed_run(0, [80.0, 96.0, 97.0])
    fixed.samples = [640, 1280, 1920]  # batch 64 × 10 steps an epoch
    grown = seed_run(1, [96.0, 97.0, 98.0])
    grown.samples = [1000, 2600, 3000]  # the sample loop's counter, past each multiple of n_train
    never = seed_run(2, [70.0, 80.0, 90.0])
    never.samples = [640, 1280, 1920]
    metrics, ci95, breakdown = summarize([fixed, grown, never], 95.0)

    assert metrics["samples_to_target_mean"] == (1280 + 1000) / 2
    assert [breakdown["per_seed"][f"seed_{s}"]["samples_to_target"] for s in range(3)] == [1280, 1000, None]
    assert ci95["samples_to_target_mean"][0] <= 1140 <= ci95["samples_to_target_mean"][1]
    validate_result(make_result("opt-digits", metrics, ci95=ci95, breakdown=breakdown), "opt-digits")


def test_when_no_run_reaches_the_target_the_time_to_target_metrics_are_absent_not_nan():
    metrics, ci95, _ = summarize([seed_run(0, [10.0, 20.0]), seed_run(1, [15.0, 25.0])], 95.0)
    assert metrics["runs_reaching_target"] == 0
    assert "epochs_to_target_mean" not in metrics and "seconds_to_target_mean" not in metrics
    assert "samples_to_target_mean" not in metrics
    assert "epochs_to_target_mean" not in ci95
    validate_result(make_result("opt-cifar10-resnet18", metrics, ci95=ci95), "opt-cifar10-resnet18")


@pytest.mark.parametrize("tamper, says", [
    (lambda d: d["runs"].pop(), "holds 1 runs for 2 seeds"),
    (lambda d: d["runs"][1].update(seed=7), "does not follow the seeds"),
    (lambda d: d["runs"][0]["train_loss"].append(0.1), "no 2 finite train_loss values"),
    (lambda d: d["runs"][0]["train_loss"].__setitem__(0, float("nan")), "no 2 finite train_loss values"),
    (lambda d: d["runs"][0]["seconds"].reverse(), "seconds that run backwards"),
    (lambda d: d["runs"][0]["seconds"].__setitem__(1, 500.0), "more training seconds than"),
])
def test_a_training_report_the_submission_tampered_with_is_wrong_output(tamper, says):
    doc = {"runs": [{"seed": s, "train_loss": [0.5, 0.2], "seconds": [1.0, 2.0]} for s in (0, 1)]}
    budget = Budget(epochs=2, batch_size=64, seeds=[0, 1], target_top1=95.0)
    assert [r.seconds for r in runs_from(doc, budget, 10.0, "")] == [[1.0, 2.0], [1.0, 2.0]]
    tamper(doc)
    with pytest.raises(EvaluationError) as caught:
        runs_from(doc, budget, 10.0, "")
    assert caught.value.kind == ErrorKind.WRONG_OUTPUT and says in caught.value.message


def test_without_cifar10_c_the_track_records_its_absence_instead_of_failing(tmp_path):
    task = training_task("opt-cifar10-resnet18")
    metrics, ci95, breakdown, env = score_corruptions(task, {}, None, tmp_path, lambda f, m: None, (0.9, 1.0))
    assert metrics == {} and ci95 == {} and breakdown == {}
    assert env["cifar10c"]["present"] is False and "runner data prepare CIFAR-10-C" in env["cifar10c"]["note"]


def test_the_device_augmentation_is_a_padded_crop_mirrored_where_drawn():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).view(2, 3, 4, 4)
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1))
    index, dy, dx = torch.tensor([1, 0]), torch.tensor([0, 2]), torch.tensor([2, 1])
    flip = torch.tensor([False, True])
    out = training.crop_flip(padded, index, dy, dx, flip, 4)
    assert torch.equal(out[0], padded[1, :, 0:4, 2:6])
    assert torch.equal(out[1], padded[0, :, 2:6, 1:5].flip(-1))


def test_standardization_comes_from_the_training_split_per_channel():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(20, 4, 4, 3), dtype=np.uint8)
    splits = Splits(images, np.zeros(20, dtype=np.int64), images[:2], np.zeros(2, dtype=np.int64), 255.0, {})
    mean, std = splits.standardization()
    stats = training.channel_stats(mean, std, "cpu")
    x = training.standardize(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), 255.0, *stats)
    np.testing.assert_allclose(x.mean(dim=(0, 2, 3)).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(x.std(dim=(0, 2, 3), unbiased=False).numpy(), 1.0, atol=1e-5)


def test_both_models_build_the_same_weights_for_a_seed_and_have_the_documented_size():
    for name, classes, channels, size in (("digits-cnn", 10, 1, 25_978), ("cifar-resnet18", 100, 3, 11_220_132)):
        first = training.build_model(name, classes, channels, seed=3)
        again = training.build_model(name, classes, channels, seed=3)
        other = training.build_model(name, classes, channels, seed=4)
        assert sum(p.numel() for p in first.parameters()) == size
        assert all(torch.equal(a, b) for a, b in zip(first.parameters(), again.parameters(), strict=True))
        assert not torch.equal(next(first.parameters()), next(other.parameters()))
