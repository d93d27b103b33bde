"""Top-k accuracy, output checks, the 200-class masking of ImageNet-A/R and the bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from runner import data_files
from runner.metrics import classification, intervals, results
from runner.spec import ErrorKind, EvaluationError, validate_result


def test_top1_counts_the_argmax_and_top5_the_five_highest_logits():
    logits = np.array(
        [
            [0.1, 0.9, 0.2, 0.3, 0.0, 0.5],  # label 1 is the argmax: a top-1 and a top-5 hit
            [0.8, 0.7, 0.1, 0.2, 0.3, 0.0],  # label 1 is second: a top-5 hit only
            [0.5, 0.4, 0.3, 0.2, 0.1, 0.0],  # label 5 is the lowest of six: a miss either way
        ]
    )
    labels = np.array([1, 1, 5])
    topk = classification.topk_indices(logits)
    assert classification.hits(topk, labels, 1).tolist() == [True, False, False]
    assert classification.hits(topk, labels, 5).tolist() == [True, True, False]
    doc = results.result_classification(
        "cifar10", np.pad(logits, ((0, 0), (0, 4)), constant_values=-1), labels
    )
    assert doc["metrics"]["top1"] == pytest.approx(100 / 3)
    assert doc["metrics"]["top5"] == pytest.approx(200 / 3)
    validate_result(doc, "cifar10")


def test_tied_logits_rank_the_lower_class_index_first():
    assert classification.topk_indices(np.array([[2.0, 5.0, 5.0, 1.0]]), k=3).tolist() == [[1, 2, 0]]


def test_compact_keeps_only_the_top5_indices_of_a_batch():
    logits = np.arange(20, dtype=np.float32).reshape(2, 10)
    assert classification.compact("cifar10", logits, 2).tolist() == [[9, 8, 7, 6, 5]] * 2


@pytest.mark.parametrize(
    ("outputs", "kind"),
    [
        (np.zeros((4, 11), dtype=np.float32), ErrorKind.WRONG_OUTPUT),  # 11 classes for a 10-class task
        (np.zeros((3, 10), dtype=np.float32), ErrorKind.WRONG_OUTPUT),  # 3 rows for a batch of 4
        (np.zeros((4, 10), dtype=np.int64), ErrorKind.WRONG_OUTPUT),  # not logits
        (np.array([[np.nan] * 10] + [[0.0] * 10] * 3, dtype=np.float32), ErrorKind.NOT_FINITE),
    ],
)
def test_outputs_of_the_wrong_shape_or_with_nan_fail_as_the_models_fault(outputs, kind):
    with pytest.raises(EvaluationError) as caught:
        classification.compact("cifar10", outputs, 4)
    assert caught.value.kind == kind


def test_imagenet_a_takes_the_argmax_over_its_200_classes_only():
    subset = data_files.subset_indices("imagenet_a")
    outside = next(i for i in range(1000) if i not in subset)
    logits = np.zeros((1, 1000), dtype=np.float32)
    logits[0, outside] = 100.0  # the global argmax is a class ImageNet-A does not have
    logits[0, subset[7]] = 5.0  # the best of the 200 is label 7
    logits[0, subset[3]] = 4.0
    compacted = classification.compact("imagenet-a", logits, 1)
    assert compacted[0, :2].tolist() == [7, 3]
    doc = results.result_imagenet_a(logits, np.array([3]))
    assert doc["metrics"]["top1"] == 0.0  # top-1 within the 200 is 7, not 3
    assert doc["metrics"]["top5"] == 100.0  # 3 is second within the 200
    validate_result(doc, "imagenet-a")


def test_imagenet_r_reports_imagenet200_accuracy_and_its_gap_to_the_renditions():
    renditions = np.array([[0, 1, 2, 3, 4], [9, 1, 2, 3, 0], [9, 8, 2, 3, 4], [9, 8, 7, 3, 4]])
    labels = np.array([0, 0, 0, 0])  # one of four right at top-1, one more within top-5
    val200 = np.array([[5, 0, 1, 2, 3], [6, 0, 1, 2, 3]])
    doc = results.result_imagenet_r(renditions, labels, val200, np.array([5, 6]))
    assert doc["metrics"]["top1"] == 25.0
    assert doc["metrics"]["top5"] == 50.0
    assert doc["metrics"]["imagenet200_top1"] == 100.0
    assert doc["metrics"]["imagenet200_gap"] == 75.0
    assert set(doc["ci95"]) >= {"top1", "top5", "imagenet200_top1", "imagenet200_gap"}
    validate_result(doc, "imagenet-r")


def test_the_interval_of_a_set_the_model_gets_all_right_is_a_point():
    assert intervals.accuracy_ci(np.ones(50, dtype=bool)) == [100.0, 100.0]


def test_intervals_are_seeded_so_a_rerun_reports_the_same_numbers():
    correct = np.random.default_rng(3).random(300) < 0.6
    assert intervals.accuracy_ci(correct, seed=7) == intervals.accuracy_ci(correct, seed=7)
    low, high = intervals.accuracy_ci(correct)
    assert low < 100 * correct.mean() < high


def test_binomial_resampling_spreads_like_resampling_the_images_themselves():
    n, p = 400, 0.3
    correct = np.zeros(n, dtype=bool)
    correct[: int(n * p)] = True
    rng = np.random.default_rng(1)
    by_images = np.array([correct[rng.integers(0, n, n)].mean() for _ in range(3000)])
    binomial = (
        intervals.resampled_successes([int(n * p)], [n], n_boot=3000, rng=np.random.default_rng(2))[:, 0] / n
    )
    expected_sd = np.sqrt(p * (1 - p) / n)  # 0.0229
    assert binomial.mean() == pytest.approx(p, abs=0.003)
    assert binomial.std() == pytest.approx(expected_sd, rel=0.08)
    assert by_images.std() == pytest.approx(expected_sd, rel=0.08)


def test_resampling_within_strata_keeps_each_stratums_size():
    correct = np.array([True] * 20 + [False] * 20)
    strata = np.array(["Europe"] * 20 + ["Africa"] * 20)
    # Within strata, every replicate has 20 right answers out of 40: the interval is the point 50.
    assert intervals.accuracy_ci(correct, strata=strata) == [50.0, 50.0]
    low, high = intervals.accuracy_ci(correct)
    assert low < 50.0 < high


def test_predictions_may_be_logits_or_top_k_indices_with_the_same_result():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(30, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 30)
    from_logits = results.result_classification("digits", logits, labels)
    from_indices = results.result_classification("digits", classification.compact("digits", logits, 30), labels)
    assert from_logits["metrics"] == from_indices["metrics"]
    assert from_logits["ci95"] == from_indices["ci95"]
