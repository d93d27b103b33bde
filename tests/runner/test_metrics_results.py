"""Every classifier task end to end on fake data: readers → a stand-in model → compact → score,
giving a result document that passes the spec, with exactly the protocol's metric keys and the
synthetic label in its env."""

from __future__ import annotations

import json

import numpy as np
import pytest

from runner.catalogue import catalogue_task, required_metrics
from runner.datasets import CLASSIFIER_TASKS, DATASETS, open_task
from runner.datasets.synth import class_style
from runner.metrics import classification, results
from runner.spec import validate_result

EXPECTED_KEYS = {
    "digits": {"top1", "top5"},
    "cifar10": {"top1", "top5"},
    "cifar100": {"top1", "top5"},
    "imagenet-val": {"top1", "top5"},
    "imagenet-a": {"top1", "top5"},
    "imagenet-r": {"top1", "top5", "imagenet200_top1", "imagenet200_gap"},
    "cifar10-c": {"top1", "corruption_error"},
    "cifar100-c": {"top1", "corruption_error"},
    "imagenet-c": {"top1", "corruption_error", "mce"},
    "geode": {"top1", "top5", "worst_region_top1", "disparity", "gap_europe_africa"},
    "dollarstreet": {"top1", "top5", "worst_region_top1", "disparity", "gap_europe_africa", "income_gap"},
}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("all-fake")
    classifier_sets = {catalogue_task(slug).dataset for slug in CLASSIFIER_TASKS}
    for name, dataset in DATASETS.items():
        if name not in classifier_sets:  # the denoising sets are not scored here
            continue
        if name == "imagenet-c":
            dataset.fake(folder, n_per_class=1, classes=2, extras=False)
        elif name != "sklearn-digits":
            dataset.fake(folder, n_per_class=1)
    return folder


def stand_in_model(slug: str):
    """Logits from the distance between an image's mean colour and each class's fake colour."""
    colours = np.stack([class_style(k)[0] for k in range(classification.task_classes(slug))]) / 255.0

    def forward(inputs: np.ndarray) -> np.ndarray:
        if inputs.shape[1] == 1:  # digits: a fixed random linear map
            weights = np.random.default_rng(0).normal(size=(64, 10))
            return (inputs.reshape(len(inputs), -1) @ weights).astype(np.float32)
        mean = inputs.mean(axis=(2, 3)) / 0.75
        return -((mean[:, None, :] - colours[None]) ** 2).sum(-1).astype(np.float32)

    return forward


@pytest.mark.parametrize("slug", CLASSIFIER_TASKS)
def test_each_classifier_task_scores_fake_data_into_a_valid_result(slug, root):
    data = open_task(slug, root)
    model = stand_in_model(slug)
    outputs = {
        part: np.concatenate([classification.compact(slug, model(b.inputs), len(b)) for b in reader.batches(32)])
        for part, reader in data.parts.items()
    }
    doc = results.score(slug, outputs, data, env={"runner": "test"}, timing={"wall_s": 1.0})
    validate_result(doc, slug)
    assert json.loads(json.dumps(doc, allow_nan=False)) == doc  # what crosses the wire
    assert set(doc["metrics"]) == EXPECTED_KEYS[slug]
    assert set(required_metrics(slug)) <= set(doc["metrics"])
    assert set(doc["ci95"]) == set(doc["metrics"])
    assert all(0.0 <= v <= 100.0 for k, v in doc["metrics"].items() if k.endswith(("top1", "top5")))
    assert doc["env"]["synthetic_data"] is (slug != "digits")
    assert doc["env"]["runner"] == "test" and "dataset_checksum" in doc["env"]


def test_the_stand_in_model_learns_something_from_fake_imagenet(root):
    data = open_task("imagenet-val", root)
    model = stand_in_model("imagenet-val")
    outputs = np.concatenate([model(b.inputs) for b in data.main.batches(64)])
    doc = results.score("imagenet-val", outputs, data)
    assert doc["metrics"]["top1"] > 50.0  # chance is 0.1


def test_imagenet_c_adds_relative_mce_once_the_clean_accuracy_is_known(root):
    data = open_task("imagenet-c", root)
    model = stand_in_model("imagenet-c")
    outputs = np.concatenate(
        [classification.compact("imagenet-c", model(b.inputs), len(b)) for b in data.main.batches(64)]
    )
    doc = results.score("imagenet-c", outputs, data, clean_top1=80.0)
    assert "relative_mce" in doc["metrics"] and "relative_mce" in doc["ci95"]
    assert set(doc["breakdown"]["per_corruption"]["fog"]) == {"1", "2", "3", "4", "5"}


def test_a_prediction_count_that_does_not_match_the_images_is_a_runner_error(root):
    from runner.spec import ErrorKind, EvaluationError

    data = open_task("cifar10", root)
    with pytest.raises(EvaluationError) as caught:
        results.score("cifar10", np.zeros((3, 5), dtype=np.int32), data)
    assert caught.value.kind == ErrorKind.RUNNER_ERROR
