"""ImageNet val / A / R / C trees: labels from the full class lists, preprocessing as torchvision's,
decoding in a pool of threads (also inside a daemonic process, as in `runner work`) or with the
GPU code path, and the licence-bound val preparation."""

from __future__ import annotations

import io
import multiprocessing
import shutil
import tarfile

import numpy as np
import pytest
from PIL import Image

from runner import data_files
from runner.datasets import DATASETS, DatasetMissing, imagenet, open_task
from runner.datasets.images import CENTER_CROP, RESIZE_CROP, BatchDecoder
from runner.datasets.synth import class_style
from runner.metrics import classification, results

WNIDS = data_files.imagenet_wnids()
A_WNIDS = data_files.subset_wnids("imagenet_a")
VAL_CLASSES = [A_WNIDS[0], A_WNIDS[5], A_WNIDS[150]]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imagenet-data")
    DATASETS["imagenet/val"].fake(folder, n_per_class=2, seed=1, classes=VAL_CLASSES)
    DATASETS["imagenet-a"].fake(folder, n_per_class=2, seed=2, classes=[A_WNIDS[5], A_WNIDS[150]])
    DATASETS["imagenet-c"].fake(folder, n_per_class=1, seed=3, classes=2)
    return folder


def colour_model(inputs: np.ndarray) -> np.ndarray:
    """A deterministic stand-in classifier: the class whose fake colour is nearest the image's."""
    colours = np.stack([class_style(k)[0] for k in range(1000)]) / 255.0
    mean = inputs.mean(axis=(2, 3)) / 0.75
    return -((mean[:, None, :] - colours[None]) ** 2).sum(-1)


def test_val_labels_are_positions_in_the_full_sorted_list_of_1000_wnids(root):
    reader = DATASETS["imagenet/val"].open(root)
    expected = sorted(WNIDS.index(w) for w in VAL_CLASSES for _ in range(2))
    assert sorted(reader.targets.labels.tolist()) == expected
    assert expected[0] > 2  # not 0, 1, 2: the folders present never define the labels


def test_a_partial_tree_scores_exactly_as_the_same_images_inside_the_full_tree(root, tmp_path):
    partial = tmp_path / "imagenet" / "val"
    shutil.copytree(root / "imagenet" / "val" / VAL_CLASSES[1], partial / VAL_CLASSES[1])
    (partial / VAL_CLASSES[2]).mkdir()
    first = sorted((root / "imagenet" / "val" / VAL_CLASSES[2]).iterdir())[0]
    shutil.copy(first, partial / VAL_CLASSES[2] / first.name)

    def evaluate(data_root):
        """Each image's (label, right at top-1), and the result document, through the real pipeline."""
        data = open_task("imagenet-val", data_root)
        verdicts, outputs = {}, []
        for batch in data.main.batches(4):
            top = classification.compact("imagenet-val", colour_model(batch.inputs), len(batch))
            outputs.append(top)
            for row, item_id, position in zip(top, batch.ids, batch.index, strict=True):
                label = int(data.main.targets.labels[position])
                verdicts[item_id] = (label, bool(row[0] == label))
        return verdicts, results.score("imagenet-val", np.concatenate(outputs), data)

    (full, _), (part, part_doc) = evaluate(root), evaluate(tmp_path)
    assert len(part) == 3
    assert all(part[i] == full[i] for i in part)  # same label, same verdict, image by image
    assert part_doc["metrics"]["top1"] == pytest.approx(100 * np.mean([full[i][1] for i in part]))


def test_imagenet_a_labels_are_positions_within_its_200_classes(root):
    reader = DATASETS["imagenet-a"].open(root)
    assert sorted(set(reader.targets.labels.tolist())) == [5, 150]
    assert reader.env["label_space"] == "imagenet_a"


def test_a_folder_outside_the_label_space_is_skipped_with_a_warning(root, tmp_path):
    tree = tmp_path / "imagenet-a"
    shutil.copytree(root / "imagenet-a", tree)
    not_in_a = next(w for w in WNIDS if w not in A_WNIDS)
    shutil.copytree(tree / A_WNIDS[5], tree / not_in_a)
    reader = DATASETS["imagenet-a"].open(tmp_path)
    assert reader.size == 4
    assert any("not classes of imagenet_a" in w and not_in_a in w for w in reader.env["dataset_warnings"])


def test_imagenet_200_is_the_val_tree_read_with_imagenet_rs_labels(root):
    reader = DATASETS["imagenet/val"].open(root, label_space="imagenet_r")
    r_wnids = data_files.subset_wnids("imagenet_r")
    kept = [w for w in VAL_CLASSES if w in r_wnids]
    assert sorted(reader.targets.labels.tolist()) == sorted(r_wnids.index(w) for w in kept for _ in range(2))


def test_preprocessing_matches_torchvisions_resize_256_and_centre_crop_224(root):
    torchvision = pytest.importorskip("torchvision")
    transforms = torchvision.transforms
    pipeline = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
    reader = DATASETS["imagenet/val"].open(root)
    batch = next(reader.batches(6))
    sizes = set()
    for inputs, item_id in zip(batch.inputs, batch.ids, strict=True):
        with Image.open(root / "imagenet" / "val" / item_id) as image:
            sizes.add(image.size)
            expected = pipeline(image.convert("RGB")).numpy()
        assert np.array_equal(inputs, expected)
    assert all(size != (224, 224) for size in sizes)  # the fake files exercise the resize

    # The GPU code path (nvJPEG + torch resize), run here on CPU tensors, agrees to one grey level.
    decoder = BatchDecoder(RESIZE_CROP, device="cpu")
    decoder.on_gpu = True
    paths = [str(root / "imagenet" / "val" / i) for i in batch.ids]
    on_gpu_path = next(decoder.map([paths])).numpy()
    assert np.abs(on_gpu_path - batch.inputs).max() <= 1.5 / 255


def test_asking_for_cuda_on_a_machine_without_it_decodes_on_the_cpu(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    decoder = BatchDecoder(RESIZE_CROP, device="cuda")
    assert not decoder.on_gpu and decoder.description == "PIL in the runner process"


def test_decoding_threads_give_the_same_batches_in_the_same_order(root):
    reader = DATASETS["imagenet/val"].open(root)
    in_process = [(b.ids, b.inputs) for b in reader.batches(4)]
    in_threads = [(b.ids, b.inputs) for b in reader.batches(4, workers=2)]
    assert [ids for ids, _ in in_threads] == [ids for ids, _ in in_process]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(in_process, in_threads, strict=True))
    assert "2 threads" in reader.env["decode"]


def _decode_with_workers(root: str, answers) -> None:
    reader = DATASETS["imagenet-c"].open(root)
    try:
        answers.put(sum(len(b.ids) for b in reader.batches(8, workers=2)))
    except BaseException as exc:  # the parent reports it
        answers.put(f"{type(exc).__name__}: {exc}")


def test_a_daemonic_process_like_the_celery_worker_child_decodes_with_its_pool(root):
    """`runner work` evaluates inside a Celery prefork child, a daemonic process that may not
    start multiprocessing children; the decoder's pool must work there all the same."""
    context = multiprocessing.get_context("fork")
    answers = context.Queue()
    child = context.Process(target=_decode_with_workers, args=(str(root), answers), daemon=True)
    child.start()
    try:
        answer = answers.get(timeout=120)
    finally:
        child.join(30)
    assert answer == len(DATASETS["imagenet-c"].open(root)), answer


def test_imagenet_c_is_read_with_a_centre_crop_only_and_each_batch_knows_its_set(root):
    reader = DATASETS["imagenet-c"].open(root)
    assert reader.env["preprocessing"] == CENTER_CROP
    batches = list(reader.batches(64))
    assert len(batches) == 19 * 5  # one batch per corruption × severity at this size
    first = batches[0]
    assert first.group == {"corruption": "gaussian_noise", "severity": 1, "extra": False}
    with Image.open(root / "imagenet-c" / first.ids[0]) as image:
        assert image.size == (224, 224)
        assert np.array_equal(
            first.inputs[0], np.asarray(image.convert("RGB")).transpose(2, 0, 1) / np.float32(255)
        )
    assert {b.group["corruption"] for b in batches if b.group["extra"]} == {
        "speckle_noise",
        "gaussian_blur",
        "spatter",
        "saturate",
    }
    labels = reader.targets.labels[first.index]
    assert set(labels.tolist()) <= {WNIDS.index(w) for w in imagenet.default_fake_wnids()[:2]}
    assert (reader.targets.corruption[first.index] == "gaussian_noise").all()


def test_imagenet_c_counts_each_set_against_the_releases_50000(root):
    report = DATASETS["imagenet-c"].verify(root)
    assert report.ok and report.synthetic
    assert report.counts["fog/3"] == 2 and report.expected["images per set"] == 50_000
    assert any(w.startswith("95 of 95 corruption/severity sets differ") for w in report.warnings)
    assert any("extra corruptions present" in note for note in report.notes)


def test_preparing_imagenet_val_without_its_archives_says_where_to_put_them(tmp_path):
    with pytest.raises(DatasetMissing) as caught:
        DATASETS["imagenet/val"].prepare(tmp_path)
    message = caught.value.message
    assert "image-net.org" in message and "ILSVRC2012_img_val.tar" in message
    assert str(tmp_path / "imagenet") in message


def write_val_archives(folder, wnid_of_image: list[str]) -> None:
    """A val tar of flat JPEGs and a devkit whose ILSVRC ids are not in sorted-wnid order."""
    from scipy.io import savemat

    ilsvrc_order = list(reversed(WNIDS))  # ILSVRC2012_ID k ↔ ilsvrc_order[k - 1]
    synsets = np.zeros(1001, dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")])
    for k, wnid in enumerate(ilsvrc_order, start=1):
        synsets[k - 1] = (k, wnid, 0)
    synsets[1000] = (1001, "n00001740", 7)  # an inner node of the hierarchy
    meta = io.BytesIO()
    savemat(meta, {"synsets": synsets})
    truth = "\n".join(str(ilsvrc_order.index(w) + 1) for w in wnid_of_image).encode()
    with tarfile.open(folder / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tf:
        for name, data in (
            ("data/meta.mat", meta.getvalue()),
            ("data/ILSVRC2012_validation_ground_truth.txt", truth),
        ):
            info = tarfile.TarInfo(f"ILSVRC2012_devkit_t12/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with tarfile.open(folder / "ILSVRC2012_img_val.tar", "w") as tf:
        for number in range(1, len(wnid_of_image) + 1):
            buffer = io.BytesIO()
            Image.new("RGB", (300, 260), (number * 40, 10, 10)).save(buffer, format="JPEG")
            info = tarfile.TarInfo(f"ILSVRC2012_val_{number:08d}.JPEG")
            info.size = len(buffer.getvalue())
            tf.addfile(info, io.BytesIO(buffer.getvalue()))


def test_placed_val_archives_are_sorted_into_wnid_folders_by_the_devkits_labels(tmp_path):
    (tmp_path / "imagenet").mkdir()
    truth = [WNIDS[7], WNIDS[999], WNIDS[7]]
    write_val_archives(tmp_path / "imagenet", truth)
    with pytest.raises(Exception, match="md5"):  # the placed files are not the release's
        imagenet.prepare_imagenet_val(tmp_path)
    report = imagenet.prepare_imagenet_val(tmp_path, check_md5=False)
    val = tmp_path / "imagenet" / "val"
    assert sorted(p.name for p in (val / WNIDS[7]).iterdir()) == [
        "ILSVRC2012_val_00000001.JPEG",
        "ILSVRC2012_val_00000003.JPEG",
    ]
    assert [p.name for p in (val / WNIDS[999]).iterdir()] == ["ILSVRC2012_val_00000002.JPEG"]
    assert report.ok and report.counts["images"] == 3
    assert DATASETS["imagenet/val"].open(tmp_path).targets.labels.tolist() == [7, 7, 999]
