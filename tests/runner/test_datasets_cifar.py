"""CIFAR-10/100 pickles and CIFAR-10-C/100-C arrays: fake copies in the released format, readers
that keep labels to themselves, severity blocks, and verify's warnings."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from runner.datasets import DATASETS, FAKE_MARKER, DatasetMissing
from runner.spec import ErrorKind


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cifar-data")
    DATASETS["cifar-10-batches-py"].fake(folder, n_per_class=3, seed=1)
    DATASETS["cifar-100-python"].fake(folder, n_per_class=1, seed=2)
    DATASETS["CIFAR-10-C"].fake(folder, n_per_class=2, seed=3)
    return folder


def load(path):
    with open(path, "rb") as fh:
        return pickle.load(fh, encoding="latin1")


def test_a_fake_cifar10_has_the_released_files_and_pickle_layout(root):
    folder = root / "cifar-10-batches-py"
    names = {p.name for p in folder.iterdir()}
    assert {"data_batch_1", "data_batch_5", "test_batch", "batches.meta", FAKE_MARKER} <= names
    batch = load(folder / "test_batch")
    assert batch["data"].dtype == np.uint8 and batch["data"].shape == (30, 3072)
    assert sorted(batch["labels"]) == sorted(list(range(10)) * 3)
    assert load(folder / "batches.meta")["label_names"][0] == "airplane"


def test_a_fake_cifar100_uses_fine_labels_and_its_meta_names_them(root):
    folder = root / "cifar-100-python"
    batch = load(folder / "test")
    assert set(batch) >= {"data", "fine_labels", "coarse_labels", "filenames"}
    assert len(load(folder / "meta")["fine_label_names"]) == 100


def test_the_reader_yields_float_nchw_in_unit_range_and_no_labels(root):
    reader = DATASETS["cifar-10-batches-py"].open(root)
    batches = list(reader.batches(8))
    assert [len(b) for b in batches] == [8, 8, 8, 6]
    first = batches[0]
    assert first.inputs.dtype == np.float32 and first.inputs.shape == (8, 3, 32, 32)
    assert 0.0 <= first.inputs.min() and first.inputs.max() <= 1.0
    assert not hasattr(first, "labels")
    raw = load(root / "cifar-10-batches-py" / "test_batch")
    # Pixel (R, row 0, column 1) of the first image is byte 1 of its row: 1024 R, then G, then B.
    assert first.inputs[0, 0, 0, 1] * 255 == pytest.approx(raw["data"][0, 1])
    assert first.inputs[0, 2, 31, 31] * 255 == pytest.approx(raw["data"][0, 3071])
    assert reader.targets.labels.tolist() == raw["labels"]


def test_results_on_a_fake_copy_are_marked_synthetic_with_the_differences_as_warnings(root):
    reader = DATASETS["cifar-10-batches-py"].open(root)
    assert reader.env["synthetic_data"] is True
    assert any("test: 30 found, the release has 10,000" in w for w in reader.env["dataset_warnings"])
    report = DATASETS["cifar-10-batches-py"].verify(root)
    assert report.ok and report.synthetic
    assert any("checksum" in w and "c99cafc152244af753f735de768cd75f" in w for w in report.warnings)


def test_a_missing_dataset_is_an_error_the_operator_can_act_on(tmp_path):
    report = DATASETS["cifar-100-python"].verify(tmp_path)
    assert not report.ok and "runner data prepare cifar-100-python" in report.errors[0]
    with pytest.raises(DatasetMissing) as caught:
        DATASETS["cifar-100-python"].open(tmp_path)
    assert caught.value.kind == ErrorKind.DATASET_MISSING


def test_a_tiny_model_trained_on_the_fake_training_split_beats_chance(root):
    dataset = DATASETS["cifar-10-batches-py"]
    train_x, train_y = dataset.load_split(root, "train")
    test_x, test_y = dataset.load_split(root, "test")
    features = lambda x: x.reshape(len(x), -1, 3).mean(axis=1)  # noqa: E731 (mean colour)
    centroids = np.stack([features(train_x[train_y == c]).mean(axis=0) for c in range(10)])
    predicted = np.argmin(((features(test_x)[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (predicted == test_y).mean() > 0.5  # chance is 0.1


def test_a_fake_cifar_c_has_a_file_per_corruption_and_five_severity_blocks(root):
    folder = root / "CIFAR-10-C"
    labels = np.load(folder / "labels.npy")
    assert labels.dtype == np.uint8 and labels.shape == (100,)  # 20 images × 5 severities
    assert (labels[:20] == labels[80:]).all()
    noise = np.load(folder / "gaussian_noise.npy")
    assert noise.dtype == np.uint8 and noise.shape == (100, 32, 32, 3)
    assert len(list(folder.glob("*.npy"))) == 20  # 15 + 4 extras + labels


def test_the_cifar_c_reader_tells_each_batch_its_corruption_and_severity(root):
    reader = DATASETS["CIFAR-10-C"].open(root)
    block = 20  # len(labels.npy) / 5
    assert reader.env["severity_block"] == block
    groups = [(b.group["corruption"], b.group["severity"], len(b)) for b in reader.batches(16)]
    assert groups[:3] == [("gaussian_noise", 1, 16), ("gaussian_noise", 1, 4), ("gaussian_noise", 2, 16)]
    assert reader.size == 19 * 5 * block
    severity_3 = next(
        b for b in reader.batches(block) if b.group == {"corruption": "fog", "severity": 3, "extra": False}
    )
    fog = np.load(root / "CIFAR-10-C" / "fog.npy")
    assert np.allclose(severity_3.inputs * 255, fog[2 * block : 3 * block].transpose(0, 3, 1, 2), atol=1e-3)
    labels = np.load(root / "CIFAR-10-C" / "labels.npy")
    assert (reader.targets.labels[severity_3.index] == labels[2 * block : 3 * block]).all()
    assert (reader.targets.severity[severity_3.index] == 3).all()


def test_the_extra_corruptions_are_read_but_flagged(root):
    reader = DATASETS["CIFAR-10-C"].open(root)
    extras = {b.group["corruption"] for b in reader.batches(100) if b.group["extra"]}
    assert extras == {"speckle_noise", "gaussian_blur", "spatter", "saturate"}
    assert sorted(reader.env["extra_corruptions_present"]) == sorted(extras)
    assert DATASETS["CIFAR-10-C"].open(root, include_extra=False).size == 15 * 5 * 20


def test_severity_blocks_follow_the_labels_length_and_missing_corruptions_are_warnings(tmp_path):
    dataset = DATASETS["CIFAR-100-C"]
    folder = dataset.fake(tmp_path, n_per_class=1, seed=0, extras=False)
    (folder / "snow.npy").unlink()
    reader = dataset.open(tmp_path)
    assert reader.env["severity_block"] == 100
    assert reader.size == 14 * 5 * 100
    assert any("snow.npy is missing" in w for w in reader.env["dataset_warnings"])


def test_labels_that_do_not_split_into_five_blocks_are_refused(tmp_path):
    dataset = DATASETS["CIFAR-10-C"]
    folder = dataset.fake(tmp_path, n_per_class=1, seed=0, extras=False)
    np.save(folder / "labels.npy", np.zeros(52, dtype=np.uint8))
    with pytest.raises(DatasetMissing, match="five equal severity blocks"):
        dataset.open(tmp_path)
