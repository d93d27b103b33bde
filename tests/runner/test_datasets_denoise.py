"""Denoising sets: the bundled photographs, fake copies, verification and a download checked offline."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from runner.datasets import denoise as datasets
from runner.datasets.denoise import (
    DatasetError,
    fake,
    git_blob_sha1,
    open_set,
    prepare,
    read_png,
    set_dir,
    training_images,
    verify,
)
from runner.denoise.baselines import evaluate_baseline


def test_skimage_sets_are_real_photographs_that_need_no_data_root():
    gray = open_set("skimage-gray")
    color = open_set("skimage-color")
    assert len(gray.images) == 8 and len(color.images) == 6
    assert not gray.synthetic and not color.synthetic
    assert gray.warnings == [] and color.warnings == [], "pixels match the pinned digests"
    for image in gray.images.values():
        assert image.dtype == np.float32 and image.ndim == 3 and image.shape[2] == 1
        assert max(image.shape[:2]) <= 256 and 0.0 <= image.min() and image.max() <= 1.0
    assert all(image.shape[2] == 3 for image in color.images.values())


def test_skimage_gray_turns_colour_photographs_gray_with_rgb2gray_rounded_to_eight_bits():
    import skimage.data
    from skimage.color import rgb2gray

    photo = skimage.data.astronaut()[128:384, 128:384]
    expected = np.round(rgb2gray(photo) * 255.0) / 255.0
    got = open_set("skimage-gray", stems=["astronaut"]).images["astronaut"][:, :, 0]
    assert np.allclose(got, expected, atol=1e-6)


def test_noise2score_training_photographs_are_not_in_any_skimage_test_set():
    used = {function for _, function in datasets.SKIMAGE_GRAY + datasets.SKIMAGE_COLOR}
    assert used.isdisjoint(datasets.SKIMAGE_TRAINING)
    stems = set(training_images(channels=1))
    assert not any(stem.split("_")[0] in used for stem in stems)


def test_a_fake_set_is_marked_synthetic_and_its_results_say_so(tmp_path):
    fake("bsd68", tmp_path, n=2, size=40)
    assert (set_dir("bsd68", tmp_path) / datasets.FAKE_MARKER).exists()
    dataset = open_set("bsd68", tmp_path)
    assert dataset.synthetic and sorted(dataset.images) == ["test001", "test002"]
    assert dataset.images["test001"].shape == (40, 40, 1)
    result = evaluate_baseline("identity", "denoise-bsd68-gauss25", root=tmp_path)
    assert result["env"]["synthetic_data"] is True
    assert set(result["breakdown"]["per_image"]) == {"test001", "test002"}


def test_a_fake_colour_set_has_three_channel_images(tmp_path):
    fake("kodak", tmp_path, n=1, size=32)
    assert open_set("kodak", tmp_path).images["kodim01"].shape == (32, 32, 3)


def test_a_missing_set_is_an_error_a_person_can_act_on(tmp_path):
    with pytest.raises(DatasetError, match="missing"):
        open_set("kodak", tmp_path)


def test_a_grayscale_set_refuses_a_colour_png(tmp_path):
    path = tmp_path / "colour.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(path)
    with pytest.raises(DatasetError, match="colour image"):
        read_png(path, 1)
    assert read_png(path, 3).shape == (8, 8, 3)


def test_git_blob_ids_are_computed_as_git_does():
    # `git hash-object` of an empty file and of "hello\n".
    assert git_blob_sha1(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert git_blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


def _png_bytes(seed: int) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(datasets.fake_image(seed, 16, 1)[:, :, 0]).save(buffer, format="PNG")
    return buffer.getvalue()


def _serve(monkeypatch, files: dict[str, bytes], blobs: dict[str, str]):
    source = datasets.SOURCES["set12"]
    listing = [{"name": n, "type": "file", "sha": blobs[n]} for n in files]

    def fetch(url, timeout=60.0):
        if url == source.listing_url():
            return json.dumps(listing).encode()
        return files[url.rsplit("/", 1)[1]]

    monkeypatch.setattr(datasets, "_fetch", fetch)


def test_prepare_downloads_checks_each_git_blob_and_writes_a_manifest(monkeypatch, tmp_path):
    files = {"01.png": _png_bytes(1), "02.png": _png_bytes(2)}
    _serve(monkeypatch, files, {n: git_blob_sha1(b) for n, b in files.items()})
    folder = prepare("set12", tmp_path)
    manifest = json.loads((folder / datasets.MANIFEST).read_text())
    assert manifest["verified"] is True
    assert manifest["files"]["01.png"]["sha256"] == hashlib.sha256(files["01.png"]).hexdigest()
    report = verify("set12", tmp_path)
    assert report["checksums"] == "ok"
    assert report["warnings"] == ["2 PNG files where the release has 12"]
    assert not open_set("set12", tmp_path).synthetic


def test_prepare_refuses_a_file_whose_content_is_not_the_pinned_commits(monkeypatch, tmp_path):
    files = {"01.png": _png_bytes(1)}
    _serve(monkeypatch, files, {"01.png": git_blob_sha1(b"something else")})
    with pytest.raises(DatasetError, match="does not match git blob"):
        prepare("set12", tmp_path)
    assert not set_dir("set12", tmp_path).exists()


def test_verify_warns_about_a_file_changed_after_prepare(monkeypatch, tmp_path):
    files = {"01.png": _png_bytes(1)}
    _serve(monkeypatch, files, {"01.png": git_blob_sha1(files["01.png"])})
    folder = prepare("set12", tmp_path)
    (folder / "01.png").write_bytes(_png_bytes(5))
    report = verify("set12", tmp_path)
    assert report["checksums"] == "mismatch"
    assert any("differ from MANIFEST.json" in w for w in report["warnings"])
    assert any("differ from MANIFEST.json" in w for w in open_set("set12", tmp_path).warnings)


def test_prepare_falls_back_to_known_names_when_the_listing_api_is_unreachable(monkeypatch, tmp_path):
    files = {f"{i:02d}.png": _png_bytes(i) for i in range(1, 13)}

    def fetch(url, timeout=60.0):
        if "api.github.com" in url:
            raise OSError("rate limited")
        return files[url.rsplit("/", 1)[1]]

    monkeypatch.setattr(datasets, "_fetch", fetch)
    prepare("set12", tmp_path)
    report = verify("set12", tmp_path)
    assert report["files"] == 12 and report["checksums"] == "ok"
    assert any("without the source's git blob ids" in w for w in report["warnings"])


def test_a_failed_download_leaves_no_half_written_set(monkeypatch, tmp_path):
    def fetch(url, timeout=60.0):
        raise OSError("no network")

    monkeypatch.setattr(datasets, "_fetch", fetch)
    monkeypatch.setattr("time.sleep", lambda seconds: None)
    with pytest.raises(DatasetError, match="download failed"):
        prepare("kodak", tmp_path)
    assert list((tmp_path / "denoise").iterdir()) == []


def test_every_denoising_set_of_the_catalogue_is_in_the_registry_by_its_id_and_short_name():
    from runner.catalogue import CATALOGUE
    from runner.datasets import DATASETS, get

    needed = {t.dataset for b in CATALOGUE if b.kind == "denoiser" for t in b.tasks}
    assert needed and needed <= set(DATASETS)
    assert get("bsd68") is DATASETS["denoise/bsd68"] and get("Denoise/Kodak") is DATASETS["denoise/kodak"]


def test_a_denoising_set_is_a_reader_whose_clean_images_stay_out_of_its_labels(tmp_path):
    from runner.datasets import DATASETS, Reader

    fake("kodak", tmp_path, n=2, size=24)
    reader = DATASETS["denoise/kodak"].open(tmp_path)
    assert isinstance(reader, Reader) and len(reader) == 2 and reader.targets.labels is None
    assert reader.env["synthetic_data"] is True and reader.env["n_images"] == 2
    batches = list(reader.batches(256))
    assert [b.ids for b in batches] == [["kodim01"], ["kodim02"]], "one image a batch: sizes differ"
    assert batches[0].inputs.shape == (1, 3, 24, 24) and batches[0].inputs.dtype == np.float32
    assert np.array_equal(batches[1].inputs[0].transpose(1, 2, 0), reader.images["kodim02"])


def test_the_bundled_sets_are_present_with_an_empty_data_root_and_never_synthetic(tmp_path):
    from runner.datasets import DATASETS, present

    dataset = DATASETS["denoise/skimage-gray"]
    assert dataset.present(tmp_path) and not dataset.synthetic(tmp_path)
    assert {"denoise/skimage-gray", "denoise/skimage-color"} <= set(present(tmp_path))
    report = dataset.verify(tmp_path)
    assert report.ok and report.counts == {"files": 8} and report.checksums["sha256"]


def test_the_data_commands_treat_a_denoising_set_like_any_dataset(tmp_path):
    from runner import data_admin

    missing = data_admin.verify("kodak", tmp_path)
    assert not missing.ok and "runner data prepare denoise/kodak" in missing.errors[0]
    folder = data_admin.fake("denoise/kodak", tmp_path, n_per_class=1)
    assert folder == set_dir("kodak", tmp_path) and len(list(folder.glob("*.png"))) == 1
    report = data_admin.verify("kodak", tmp_path)
    assert report.ok and report.synthetic and report.counts == {"files": 1}
    assert data_admin.fingerprint("denoise/kodak", tmp_path) == report.checksums["sha256"]
    row = next(e for e in data_admin.entries(tmp_path) if e.name == "denoise/kodak")
    assert row.present and row.synthetic and row.path == str(folder)
    bundled = next(e for e in data_admin.entries(tmp_path) if e.name == "denoise/skimage-color")
    assert bundled.present and bundled.path == "bundled with scikit-image"
    with pytest.raises(ValueError, match="nothing to fake"):
        data_admin.fake("skimage-gray", tmp_path)
