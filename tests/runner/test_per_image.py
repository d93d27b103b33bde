"""Per-image outcomes (issue 17 item 1): `runner run --task digits --out R.json` writes
``R.per_image.npz`` whose losses and EL2N equal an independent float64 computation from the
model's logits; the group keys of the tasks that have them; and what the site's reader refuses."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from runner import datasets, serve
from runner.baselines.classifiers import FOLDER
from runner.cli import app
from runner.datasets.digits import load_digits_arrays, stratified_split
from runner.metrics import per_image
from runner.metrics.per_image import PerImageError, read_per_image

DIGITS_CNN = FOLDER / "digits_cnn.pt"


# --------------------------------------------------------------------------------------------
# The done-when of issue 17: the digits file against torch's own float64 computation.
# --------------------------------------------------------------------------------------------
@pytest.mark.usefixtures("bwrap")
def test_runner_run_on_digits_writes_a_per_image_file_whose_loss_and_el2n_equal_torch_in_float64(
        tmp_path, monkeypatch):
    monkeypatch.setenv("RUNNER_WORK_DIR", str(tmp_path))
    out = tmp_path / "R.json"
    try:
        done = CliRunner().invoke(app, ["run", "--task", "digits", "--artifact", str(DIGITS_CNN), "--out", str(out)])
    finally:
        serve.POOL.close_idle()
    assert done.exit_code == 0, done.output
    path = tmp_path / "R.per_image.npz"
    assert "per-image outcomes written to" in done.output and path.is_file()
    doc = json.loads(out.read_text())
    payload = path.read_bytes()
    assert doc["files"]["per_image"] == {"name": "R.per_image.npz", "sha256": hashlib.sha256(payload).hexdigest(),
                                         "n": 450, "bytes": len(payload)}
    with np.load(path, allow_pickle=False) as npz:
        got = {key: npz[key] for key in npz.files}
    assert sorted(got) == ["el2n", "index", "label", "loss", "pred", "thumb", "thumb_row", "top5_hit"]  # thumbs: runner/thumbnails.py

    # The images, labels and load_digits() rows of the task's test split, from the dataset itself.
    images, labels = load_digits_arrays()
    _, test_rows = stratified_split(labels, 0.25, 0)
    np.testing.assert_array_equal(got["index"], test_rows)
    np.testing.assert_array_equal(got["label"], labels[test_rows])

    model = torch.jit.load(str(DIGITS_CNN)).eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(images[test_rows].astype(np.float32)[:, None] / 16.0)).double()
    target = torch.from_numpy(labels[test_rows])
    loss = torch.nn.functional.cross_entropy(logits, target, reduction="none").numpy()
    el2n = torch.linalg.vector_norm(logits.softmax(1) - torch.nn.functional.one_hot(target, 10), dim=1).numpy()
    # The sandbox computed the float32 logits on its own: they agree to float32 rounding.
    np.testing.assert_allclose(got["loss"], loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["el2n"], el2n, rtol=1e-5, atol=1e-6)
    assert got["loss"].dtype == got["el2n"].dtype == np.float64
    np.testing.assert_array_equal(got["pred"], logits.argmax(1).numpy())
    np.testing.assert_array_equal(got["top5_hit"], (logits.topk(5, dim=1).indices == target[:, None]).any(1).numpy())
    assert 100 * np.mean(got["pred"] == got["label"]) == pytest.approx(doc["metrics"]["top1"])
    assert 0.05 < got["loss"].mean() < 0.5 and (got["el2n"] > 0.5).sum() >= 5  # a trained model, with failures
    assert read_per_image(payload, slug="digits", expected_n=450).keys() == got.keys()


# --------------------------------------------------------------------------------------------
# The formula, by hand.
# --------------------------------------------------------------------------------------------
def test_loss_and_el2n_of_hand_computed_logits():
    label, loss, el2n = per_image.outcomes(np.array([[0.0, 0.0], [np.log(3.0), 0.0]]), np.array([0, 1]))
    np.testing.assert_array_equal(label, [0, 1])
    # p = (1/2, 1/2): loss log 2, ‖(−1/2, 1/2)‖ = √½; p = (3/4, 1/4), label 1: −log ¼, ‖(3/4, −3/4)‖
    np.testing.assert_allclose(loss, [np.log(2.0), np.log(4.0)], rtol=1e-15)
    np.testing.assert_allclose(el2n, [np.sqrt(0.5), 0.75 * np.sqrt(2.0)], rtol=1e-15)


def test_confident_logits_stay_finite_and_exact_where_the_expanded_formula_cancels():
    logits = np.array([[1000.0, 0.0, 0.0], [1000.0, 0.0, 0.0], [20.0, 0.0, 0.0]], dtype=np.float32)
    _, loss, el2n = per_image.outcomes(logits, np.array([0, 1, 0]))
    assert loss[0] == 0.0 and el2n[0] == 0.0
    assert loss[1] == pytest.approx(1000.0) and el2n[1] == pytest.approx(np.sqrt(2.0))
    # p_other = e^-20 / (1 + 2e^-20): EL2N ≈ √6 · e^-20 ≈ 5.05e-9, which Σp² − 2p_y + 1 loses.
    q = np.exp(-20.0) / (1 + 2 * np.exp(-20.0))
    assert el2n[2] == pytest.approx(np.sqrt(6.0) * q, rel=1e-6)


def test_imagenet_a_scores_only_its_200_columns_and_labels_index_them():
    subset = np.arange(0, 1000, 5)[:200]
    logits = np.zeros((1, 1000))
    logits[0, 1] = 50.0  # outside the subset: ignored
    logits[0, subset[7]] = 2.0
    _, loss, el2n = per_image.outcomes(logits, np.array([7]), subset=subset)
    p = np.exp(2.0) / (np.exp(2.0) + 199)
    assert loss[0] == pytest.approx(-np.log(p), rel=1e-12)
    assert el2n[0] == pytest.approx(np.sqrt((1 - p) ** 2 + 199 * ((1 - p) / 199) ** 2), rel=1e-12)


def test_any_of_labels_take_the_accepted_index_the_model_finds_most_probable():
    logits = np.zeros((2, 10))
    logits[0, 7], logits[0, 3] = 3.0, 1.0
    logits[1, 3] = 3.0
    label, loss, _ = per_image.outcomes(logits, accepted=np.array([[3, 7, -1], [3, -1, -1]]))
    np.testing.assert_array_equal(label, [7, 3])
    assert loss[0] == pytest.approx(-(3.0 - np.log(np.exp(3.0) + np.exp(1.0) + 8)))


def test_labels_outside_the_classes_are_refused():
    with pytest.raises(ValueError, match="labels must lie in 0–9"):
        per_image.outcomes(np.zeros((1, 10)), np.array([10]))
    with pytest.raises(ValueError, match="at least one accepted"):
        per_image.outcomes(np.zeros((1, 10)), accepted=np.array([[-1, -1]]))


def test_the_file_beside_a_result_is_named_after_it():
    assert per_image.file_name("out/R.json").as_posix() == "out/R.per_image.npz"
    assert per_image.file_name("out/result-cifar10.json").name == "result-cifar10.per_image.npz"
    assert per_image.file_name("R").name == "R.per_image.npz"


# --------------------------------------------------------------------------------------------
# Group keys, on the fake datasets' own targets (no model: logits made up).
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("slug", ["cifar10-c", "dollarstreet", "imagenet-r"])
def test_tasks_with_groups_carry_them_aligned_with_their_targets(slug, tmp_path):
    from runner.catalogue import catalogue_task
    from runner.metrics.classification import compact, task_classes

    name = catalogue_task(slug).dataset
    datasets.get(name).fake(tmp_path)
    if slug == "imagenet-r":
        datasets.get("imagenet/val").fake(tmp_path)
    data = datasets.open_task(slug, tmp_path)
    rng = np.random.default_rng(0)
    tops, collected = {}, {}
    for part, reader in data.parts.items():
        logits = rng.normal(size=(len(reader), task_classes(slug))).astype(np.float32)
        tops[part] = compact(slug, logits)
        collected[part] = per_image.PartOutcomes(slug, reader.targets, len(reader))
        collected[part].add(np.arange(len(reader)), logits)
    arrays = per_image.per_image_arrays(slug, data, tops, collected)
    n = sum(len(r) for r in data.parts.values())
    assert {len(a) for a in arrays.values()} == {n}
    main = data.main.targets
    if slug == "cifar10-c":
        np.testing.assert_array_equal(arrays["corruption"], np.asarray(main.corruption).astype(str))
        assert set(arrays["severity"]) == {1, 2, 3, 4, 5} and arrays["corruption"].dtype.kind == "U"
    if slug == "dollarstreet":
        np.testing.assert_array_equal(arrays["region"], np.asarray(main.region).astype(str))
        assert set(arrays["income_group"]) <= {"q1", "q2", "q3", "q4"}
        for i, accepted in enumerate(main.accepted):  # the any-of label is one of the image's accepted
            assert arrays["label"][i] in accepted
    if slug == "imagenet-r":
        assert list(dict.fromkeys(arrays["part"])) == ["main", "imagenet200"]
        assert arrays["label"].max() < 200 and arrays["pred"].max() < 200
    back = read_per_image(per_image.npz_bytes(arrays), slug=slug, expected_n=n)
    for key, value in arrays.items():
        np.testing.assert_array_equal(back[key], value)


# --------------------------------------------------------------------------------------------
# What the reader refuses (the site reads what runners upload with it).
# --------------------------------------------------------------------------------------------
def good(n: int = 4) -> dict[str, np.ndarray]:
    return {"index": np.arange(n), "label": np.zeros(n, np.int64), "pred": np.zeros(n, np.int64),
            "top5_hit": np.ones(n, bool), "loss": np.full(n, 0.1), "el2n": np.full(n, 0.2)}


def with_member(arrays: dict[str, np.ndarray], name: str, data: bytes) -> bytes:
    buffer = io.BytesIO(per_image.npz_bytes(arrays))
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


def test_the_same_arrays_always_give_the_same_bytes():
    assert per_image.npz_bytes(good()) == per_image.npz_bytes(good())
    with np.load(io.BytesIO(per_image.npz_bytes(good())), allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(good())


def test_a_pickled_array_is_refused_without_being_unpickled(tmp_path):
    marker = tmp_path / "unpickled"

    class Boom:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    arrays = good()
    arrays.pop("label")
    member = io.BytesIO()
    np.lib.format.write_array(member, np.array([Boom()] * 4, dtype=object), allow_pickle=True)
    with pytest.raises(PerImageError, match="label holds Python objects"):
        read_per_image(with_member(arrays, "label.npy", member.getvalue()))
    assert not marker.exists()


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("el2n"), r"lacks the arrays \['el2n'\]"),
    (lambda a: a.update(loss=np.zeros(3)), "arrays differ in length"),
    (lambda a: a.update(extra=np.zeros(4)), r"unknown arrays \['extra'\]"),
    (lambda a: a.update(loss=np.zeros(4, np.int64)), "loss has dtype int64"),
    (lambda a: a.update(el2n=np.full(4, 1.5)), r"el2n must lie in \[0, √2\]"),
    (lambda a: a.update(loss=np.full(4, np.nan)), "loss must be finite"),
    (lambda a: a.update(index=np.zeros((2, 2), np.int64)), "index must be 1-D"),
    (lambda a: a.update(region=np.array(list("abcd"))), r"digits files carry no \['region'\]"),
])
def test_malformed_files_are_refused_naming_the_fault(change, message):
    arrays = good()
    change(arrays)
    with pytest.raises(PerImageError, match=message):
        read_per_image(per_image.npz_bytes(arrays), slug="digits")


def test_a_file_of_another_size_than_the_result_names_and_a_task_without_its_groups_are_refused():
    with pytest.raises(PerImageError, match="4 images, but the result names 5"):
        read_per_image(per_image.npz_bytes(good()), expected_n=5)
    with pytest.raises(PerImageError, match=r"lacks the arrays \['corruption', 'severity'\]"):
        read_per_image(per_image.npz_bytes(good()), slug="cifar10-c")


def test_not_a_zip_and_a_zip_bomb_are_refused_before_anything_is_unpacked():
    with pytest.raises(PerImageError, match="not an .npz file"):
        read_per_image(b"\x93NUMPY not a zip")
    big = good(1_000_000)
    big["index"] = np.zeros(1_000_000, np.int64)
    packed = per_image.npz_bytes(big)  # 41 MB of constants unpacked, a few tens of kB packed
    assert len(packed) < 200_000
    with pytest.raises(PerImageError, match="unpacks to 41,000,"):
        read_per_image(packed, max_unpacked_bytes=10_000_000)


# --------------------------------------------------------------------------------------------
# The runner's upload call: the one retry policy, and a refusal it does not retry.
# --------------------------------------------------------------------------------------------
def test_the_upload_is_retried_through_server_errors_and_a_conflict_is_not(site, client):
    from runner.client import SiteConflict

    from . import sources

    site.add_job(41, "opt-f1", sources.SGD)
    spec = client.claim(41, [])
    payload = per_image.npz_bytes(good())
    with pytest.raises(SiteConflict, match="post the result first"):
        client.post_per_image(41, spec.attempt, payload)
    site.jobs[41].results.append({"attempt": spec.attempt})
    site.one_off = [503, 500]
    assert client.post_per_image(41, spec.attempt, payload) == {"stored": True, "duplicate": False}
    assert site.jobs[41].per_images == [payload]
    assert site.paths_called().count("/api/runner/v1/jobs/41/per-image/") == 4
