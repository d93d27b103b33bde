"""The failure explorer's thumbnails (issue 17 item 4): which images the runner samples, that the
thumbnails in `runner run`'s per-image file are the task's own images, and that the site's reader
refuses thumbnail arrays that are not what the runner writes."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from runner import serve, thumbnails
from runner.baselines.classifiers import FOLDER
from runner.cli import app
from runner.datasets.digits import load_digits_arrays
from runner.per_image_file import MAX_THUMBS, PerImageError, npz_bytes, read_per_image, read_thumbnails


def arrays(n: int, classes: int, wrong_every: int = 3, **groups: np.ndarray) -> dict[str, np.ndarray]:
    label = np.arange(n, dtype=np.int64) % classes
    pred = np.where(np.arange(n) % wrong_every == 0, (label + 1) % classes, label)
    return {"index": np.arange(n, dtype=np.int64), "label": label, "pred": pred,
            "top5_hit": np.ones(n, dtype=bool), "loss": np.full(n, 0.5), "el2n": np.full(n, 0.5), **groups}


def test_each_class_gets_up_to_16_failures_and_4_successes():
    a = arrays(1000, 10)
    rows = thumbnails.sample_rows(a)
    assert (np.diff(rows) > 0).all()
    for c in range(10):
        mine = rows[a["label"][rows] == c]
        wrong = a["pred"][mine] != c
        assert wrong.sum() == 16 and (~wrong).sum() == 4
    assert np.array_equal(rows, thumbnails.sample_rows(a))  # the same images on every run


def test_many_classes_share_a_bounded_budget_and_every_region_is_covered():
    a = arrays(20_000, 1000, region=np.array(["Africa", "Europe", "Asia", "Americas"] * 5000))
    rows = thumbnails.sample_rows(a)
    assert len(rows) <= thumbnails.PER_KEY * 2 and len(rows) <= MAX_THUMBS
    for region in ("Africa", "Europe", "Asia", "Americas"):
        mine = rows[a["region"][rows] == region]
        assert (a["pred"][mine] != a["label"][mine]).sum() >= 16 and (a["pred"][mine] == a["label"][mine]).sum() >= 4
    assert len(np.unique(a["label"][rows])) == 1000  # one image of every class at least


def test_only_the_primary_part_is_sampled():
    a = arrays(400, 10, part=np.array(["main"] * 200 + ["imagenet200"] * 200))
    assert (a["part"][thumbnails.sample_rows(a)] == "main").all()


@pytest.mark.usefixtures("bwrap")
def test_runner_run_on_digits_keeps_thumbnails_of_the_tasks_own_images(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNNER_WORK_DIR", str(tmp_path))
    out = tmp_path / "R.json"
    try:
        done = CliRunner().invoke(app, ["run", "--task", "digits", "--artifact", str(FOLDER / "digits_cnn.pt"),
                                        "--out", str(out)])
    finally:
        serve.POOL.close_idle()
    assert done.exit_code == 0, done.output
    payload = (tmp_path / "R.per_image.npz").read_bytes()
    got = read_per_image(payload, slug="digits", expected_n=450)
    rows, thumbs = got["thumb_row"], got["thumb"]
    assert thumbs.shape == (len(rows), 32, 32, 3) and thumbs.dtype == np.uint8
    wrong = got["pred"] != got["label"]
    assert wrong[rows].sum() == wrong.sum() > 0  # the CNN's few failures are all kept
    for c in range(10):
        assert (~wrong[rows] & (got["label"][rows] == c)).sum() == 4
    images, _ = load_digits_arrays()
    for position, row in enumerate(rows):
        grey = np.rint(images[got["index"][row]].astype(np.float64) * 255 / 16).astype(np.uint8)
        expected = np.repeat(np.repeat(grey, 4, axis=0), 4, axis=1)  # 8×8 → 32×32, nearest
        np.testing.assert_array_equal(thumbs[position], np.repeat(expected[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(read_thumbnails(payload), thumbs)


def _with(**changes) -> bytes:
    a = arrays(50, 10)
    a.update(thumb_row=np.arange(5, dtype=np.int64), thumb=np.zeros((5, 8, 8, 3), dtype=np.uint8))
    a.update(changes)
    return npz_bytes({k: v for k, v in a.items() if v is not None})


@pytest.mark.parametrize(("changes", "message"), [
    ({"thumb_row": None}, "come together"),
    ({"thumb": np.zeros((5, 8, 8, 3), dtype=np.float32)}, "must be uint8"),
    ({"thumb": np.zeros((5, 64, 64, 3), dtype=np.uint8)}, "at most 32"),
    ({"thumb": np.zeros((5, 8, 8), dtype=np.uint8)}, "must be uint8"),
    ({"thumb_row": np.array([0, 1, 2, 3, 50])}, "distinct rows"),
    ({"thumb_row": np.array([0, 1, 2, 3, 3])}, "distinct rows"),
    ({"thumb_row": np.arange(4)}, "4 thumb_row entries for 5"),
])
def test_the_reader_refuses_thumbnails_the_runner_does_not_write(changes, message):
    with pytest.raises(PerImageError, match=message):
        read_per_image(_with(**changes), slug="digits")


def test_a_pickled_thumbnail_array_is_refused_without_unpickling():
    buffer = io.BytesIO()
    np.savez(buffer, **{**arrays(50, 10), "thumb_row": np.arange(2), "thumb": np.array([object(), 1], dtype=object)})
    with pytest.raises(PerImageError, match="pickle"):
        read_per_image(buffer.getvalue(), slug="digits")
    with pytest.raises(PerImageError):
        read_thumbnails(buffer.getvalue())



def test_thumbnails_of_corruption_arrays_and_image_files_are_those_images_reduced(tmp_path):
    """-C arrays (memory-mapped blocks) and image files (decoded and cropped as for the model)
    across two parts: each thumbnail is its own image, box-filtered to 32×32."""
    from runner.datasets import TaskData
    from runner.datasets.base import Targets
    from runner.datasets.images import CENTER_CROP, load_file
    from runner.datasets.readers import ArrayBlock, CorruptionArrayReader, ImageFileReader, ImageSet

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "fog.npy", pixels)
    blocks = [ArrayBlock(tmp_path / "fog.npy", 0, 6, {"corruption": "fog", "severity": 1}),
              ArrayBlock(tmp_path / "fog.npy", 6, 12, {"corruption": "fog", "severity": 2})]
    arrays_reader = CorruptionArrayReader("c", blocks, Targets(labels=np.arange(12) % 3), {})
    names = []
    for i in range(4):
        name = f"{i}.png"
        Image.fromarray(rng.integers(0, 256, size=(240, 260, 3), dtype=np.uint8)).save(tmp_path / name)
        names.append(name)
    files_reader = ImageFileReader("f", [ImageSet(tmp_path, names)], CENTER_CROP, Targets(labels=np.arange(4)), {})
    data = TaskData("cifar10-c", {"main": arrays_reader, "imagenet200": files_reader})
    a = arrays(16, 3)
    a["label"][12:], a["pred"][12:] = np.arange(4), (np.arange(4) + 1) % 3
    got = thumbnails.with_thumbnails(data, a)
    assert len(got["thumb_row"]) > 0 and got["thumb"].shape[1:] == (32, 32, 3)
    for position, row in enumerate(got["thumb_row"].tolist()):
        if row < 12:
            expected = pixels[row]  # already 32×32: the box filter keeps it
        else:
            crop = load_file(str(tmp_path / names[row - 12]), CENTER_CROP)
            expected = np.asarray(Image.fromarray(crop).resize((32, 32), Image.Resampling.BOX))
        np.testing.assert_array_equal(got["thumb"][position], expected, err_msg=f"row {row}")
    assert (got["thumb_row"] >= 12).any()  # both parts were sampled (no 'part' key: every row counts)
