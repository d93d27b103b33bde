"""CIFAR-C and ImageNet-C: accuracy per corruption and severity, the mean over the 15 × 5,
corruption error, and ImageNet-C's AlexNet-normalized CE, mCE and relative mCE."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runner import data_files
from runner.metrics import results
from runner.spec import validate_result

IMAGENET_C = json.loads((Path(data_files.__file__).parent / "imagenet_c.json").read_text())
FIFTEEN = IMAGENET_C["corruptions"]


def corrupted_predictions(accuracy_of, per_set: int, corruptions=FIFTEEN):
    """Top-1 predictions, labels, corruption and severity per item, where set (c, s) has
    ``accuracy_of(c, s) * per_set`` right answers (label 1; a right answer predicts 1, else 0)."""
    predictions, labels, names, severities = [], [], [], []
    for c in corruptions:
        for s in range(1, 6):
            right = int(round(accuracy_of(c, s) * per_set))
            predictions += [1] * right + [0] * (per_set - right)
            labels += [1] * per_set
            names += [c] * per_set
            severities += [s] * per_set
    return (
        np.array(predictions)[:, None],
        np.array(labels),
        np.array(names, dtype=object),
        np.array(severities),
    )


def test_cifar_c_reports_top1_per_corruption_and_severity_and_the_mean_over_the_sets():
    # Two corruptions present: gaussian_noise gets 4, 3, 2, 1, 0 right of 4; contrast all 4 of 4.
    predictions, labels, names, severities = corrupted_predictions(
        lambda c, s: (5 - s) / 4 if c == "gaussian_noise" else 1.0,
        per_set=4,
        corruptions=["gaussian_noise", "contrast"],
    )
    doc = results.result_corruptions("cifar10-c", predictions, labels, names, severities)
    table = doc["breakdown"]["per_corruption"]
    assert table["gaussian_noise"] == {"1": 100.0, "2": 75.0, "3": 50.0, "4": 25.0, "5": 0.0}
    assert table["contrast"] == {str(s): 100.0 for s in range(1, 6)}
    mean = (100 + 75 + 50 + 25 + 0 + 5 * 100) / 10
    assert doc["metrics"]["top1"] == pytest.approx(mean)
    assert doc["metrics"]["corruption_error"] == pytest.approx(100 - mean)
    assert "mce" not in doc["metrics"]  # no AlexNet normalization on CIFAR
    validate_result(doc, "cifar10-c")


def test_the_four_extra_corruptions_are_reported_apart_and_never_enter_the_mean():
    predictions, labels, names, severities = corrupted_predictions(
        lambda c, s: 0.0 if c == "speckle_noise" else 1.0, per_set=2, corruptions=[*FIFTEEN, "speckle_noise"]
    )
    doc = results.result_corruptions("cifar100-c", predictions, labels, names, severities)
    assert doc["metrics"]["top1"] == 100.0
    assert "speckle_noise" not in doc["breakdown"]["per_corruption"]
    assert doc["breakdown"]["extra_corruptions"]["speckle_noise"] == {str(s): 0.0 for s in range(1, 6)}


def test_the_mean_is_over_sets_not_images_when_sets_differ_in_size():
    names = np.array(["fog"] * 3 + ["frost"] * 1, dtype=object)
    severities = np.array([1, 1, 1, 1])
    predictions = np.array([[1], [1], [1], [0]])
    doc = results.result_corruptions("cifar10-c", predictions, np.ones(4, dtype=int), names, severities)
    assert doc["metrics"]["top1"] == pytest.approx((100 + 0) / 2)  # not 3 of 4 = 75


def test_imagenet_c_normalizes_each_corruption_by_alexnets_errors():
    def accuracy_of(c, s):
        return [1.0, 0.75, 0.5, 0.5, 0.25][s - 1] if c in FIFTEEN[:5] else 0.5

    predictions, labels, names, severities = corrupted_predictions(accuracy_of, per_set=4)
    doc = results.result_corruptions("imagenet-c", predictions, labels, names, severities)
    ces = []
    for c in FIFTEEN:
        errors = [1 - accuracy_of(c, s) for s in range(1, 6)]
        ces.append(100 * sum(errors) / sum(IMAGENET_C["alexnet_err"][c]))
    assert doc["breakdown"]["ce"]["gaussian_noise"] == pytest.approx(
        100 * (0 + 0.25 + 0.5 + 0.5 + 0.75) / sum([0.69528, 0.82542, 0.93554, 0.98138, 0.99452])
    )
    assert doc["metrics"]["mce"] == pytest.approx(sum(ces) / 15)
    assert doc["metrics"]["top1"] == pytest.approx(100 * (5 * 0.6 + 10 * 0.5) / 15)
    assert "relative_mce" not in doc["metrics"]  # needs the clean error of the same submission
    assert doc["ci95"]["mce"][0] <= doc["metrics"]["mce"] <= doc["ci95"]["mce"][1]
    validate_result(doc, "imagenet-c")


def test_relative_mce_subtracts_the_clean_error_on_both_sides():
    predictions, labels, names, severities = corrupted_predictions(lambda c, s: 0.5, per_set=2)
    doc = results.result_corruptions("imagenet-c", predictions, labels, names, severities, clean_top1=76.15)
    clean = 1 - 0.7615
    relative = [
        100 * sum(0.5 - clean for _ in range(5)) / sum(e - 0.4348 for e in IMAGENET_C["alexnet_err"][c])
        for c in FIFTEEN
    ]
    assert doc["metrics"]["relative_mce"] == pytest.approx(sum(relative) / 15)
    assert doc["breakdown"]["relative_ce"]["brightness"] == pytest.approx(
        relative[FIFTEEN.index("brightness")]
    )


def test_alexnets_own_errors_score_an_mce_of_100():
    # Every CE is AlexNet's error over itself.
    def alexnet_accuracy(c, s):
        return 1 - IMAGENET_C["alexnet_err"][c][s - 1]

    predictions, labels, names, severities = corrupted_predictions(alexnet_accuracy, per_set=50_000 // 1000)
    doc = results.result_corruptions("imagenet-c", predictions, labels, names, severities)
    assert doc["metrics"]["mce"] == pytest.approx(100.0, abs=0.5)


def test_a_corruption_missing_a_severity_is_left_out_of_the_mce_and_said_so():
    predictions, labels, names, severities = corrupted_predictions(lambda c, s: 0.5, per_set=2)
    keep = ~((names == "fog") & (severities == 5))
    doc = results.result_corruptions(
        "imagenet-c", predictions[keep], labels[keep], names[keep], severities[keep]
    )
    assert "fog" not in doc["breakdown"]["ce"]
    assert len(doc["breakdown"]["ce"]) == 14
    assert "14 of 15" in doc["env"]["metric_notes"]["mce"]
    assert "74 of the 75" in doc["env"]["metric_notes"]["top1"]
