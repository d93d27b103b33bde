"""The registry the worker and CLI use: one dataset per catalogue id, aliases, presence, task
readers, and scikit-learn's digits with a fixed stratified split."""

from __future__ import annotations

import numpy as np
import pytest

import runner.datasets as datasets
from runner.catalogue import CATALOGUE
from runner.datasets import DATASETS, DatasetMissing, get, open_task


def test_every_classifier_dataset_of_the_catalogue_has_a_reader():
    needed = {t.dataset for b in CATALOGUE if b.kind == "classifier" for t in b.tasks}
    assert needed <= set(DATASETS)


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("cifar-10", "cifar-10-batches-py"),
        ("cifar10-c", "CIFAR-10-C"),
        ("imagenet-val", "imagenet/val"),
        ("ImageNet-C", "imagenet-c"),
        ("digits", "sklearn-digits"),
        ("dollar-street", "dollarstreet"),
    ],
)
def test_operators_can_name_datasets_by_their_usual_names(alias, name):
    assert get(alias) is DATASETS[name]


def test_unknown_dataset_names_list_the_known_ones():
    with pytest.raises(KeyError, match="imagenet-a"):
        get("mnist")


def test_a_node_reports_the_datasets_it_holds_fake_ones_included(tmp_path):
    assert "imagenet-a" not in datasets.present(tmp_path)
    DATASETS["imagenet-a"].fake(tmp_path, n_per_class=1, classes=1)
    held = datasets.present(tmp_path)
    assert "imagenet-a" in held and "sklearn-digits" in held
    assert "imagenet/val" not in held


def test_imagenet_r_needs_the_val_tree_for_its_imagenet_200_score(tmp_path):
    DATASETS["imagenet-r"].fake(tmp_path, n_per_class=1, classes=2)
    with pytest.raises(DatasetMissing, match="imagenet/val"):
        open_task("imagenet-r", tmp_path)
    DATASETS["imagenet/val"].fake(tmp_path, n_per_class=1)
    data = open_task("imagenet-r", tmp_path)
    assert set(data.parts) == {"main", "imagenet200"}
    assert data.synthetic and data.env["imagenet200"]["label_space"] == "imagenet_r"


def test_a_task_whose_dataset_is_absent_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetMissing, match="runner data prepare CIFAR-10-C"):
        open_task("cifar10-c", tmp_path)


def test_the_digits_split_is_real_stratified_and_the_same_every_time():
    train_x, train_y, test_x, test_y = datasets.digits_split(0.25, seed=0)
    again = datasets.digits_split(0.25, seed=0)
    assert len(train_y) + len(test_y) == 1797
    assert np.array_equal(test_x, again[2])
    # Every class keeps its share: round(0.25 × class size) in test.
    for label in range(10):
        size = int((train_y == label).sum() + (test_y == label).sum())
        assert int((test_y == label).sum()) == round(0.25 * size)
    assert not np.array_equal(test_y, datasets.digits_split(0.25, seed=1)[3])


def test_the_digits_reader_is_real_data_never_marked_synthetic(tmp_path):
    data = open_task("digits", tmp_path)
    assert data.env["synthetic_data"] is False
    assert data.main.size == 450
    batch = next(data.main.batches(500))
    assert batch.inputs.shape == (450, 1, 8, 8) and batch.inputs.max() <= 1.0
    with pytest.raises(ValueError, match="real data"):
        DATASETS["sklearn-digits"].fake(tmp_path)
