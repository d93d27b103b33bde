"""The demo's classifiers (runner/baselines/classifiers/demo.py): trained in seconds on synthetic
patterns, they learn the fake copies' classes, and the fake copies' harder groups cost them
accuracy; the demo never writes over data that is not its own."""
from __future__ import annotations

import numpy as np
import pytest

from runner.baselines.classifiers import demo
from runner.datasets import DATASETS
from runner.evaluate import evaluate, local_job_spec


@pytest.fixture(scope="module")
def cifar10(tmp_path_factory):
    """Fake CIFAR-10 and CIFAR-10-C, and the demo's tiny CNN for them (trained on 80 images a class, as in the demo)."""
    root = tmp_path_factory.mktemp("demo-data")
    DATASETS["cifar-10-batches-py"].fake(root, n_per_class=10)
    DATASETS["CIFAR-10-C"].fake(root, n_per_class=4, extras=False)
    board = demo.boards()[0]
    x, y = demo.training_images(board, 80, np.random.default_rng(0))
    model = demo.train(board, demo.RECIPES[1], x, y)
    path = root / "tiny.pt"
    demo.export(model, path)
    return root, path


def test_a_demo_model_learns_the_fake_classes_and_loses_accuracy_to_the_stand_in_corruptions(cifar10):
    root, path = cifar10
    clean = evaluate(local_job_spec("cifar10", path), path, data_root=root, trust=True)
    corrupted = evaluate(local_job_spec("cifar10-c", path), path, data_root=root, trust=True)
    assert clean["env"]["synthetic_data"] is True and corrupted["env"]["synthetic_data"] is True
    assert clean["metrics"]["top1"] >= 60  # chance is 10
    table = corrupted["breakdown"]["per_corruption"]
    mildest = np.mean([levels["1"] for levels in table.values()])
    strongest = np.mean([levels["5"] for levels in table.values()])
    assert strongest < mildest - 10, table
    assert len({round(levels["5"]) for levels in table.values()}) >= 4  # corruptions differ, not one curve


def test_the_demo_never_replaces_a_dataset_folder_that_is_not_its_own_fake(tmp_path):
    mine = tmp_path / "cifar-10-batches-py"
    mine.mkdir()
    (mine / "notes.txt").write_text("an operator's half-copied release")
    with pytest.raises(FileExistsError, match="move it away"):
        demo.write_fakes(tmp_path)
    assert (mine / "notes.txt").read_text() == "an operator's half-copied release"
