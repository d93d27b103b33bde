"""The digits board's reference classifier and `runner baselines export`: what the site seeds,
what the sandboxed runner scores it at, and torchvision exports that follow the contract."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import warnings
import zipfile

import numpy as np
import pytest
import torchvision
from typer.testing import CliRunner

from runner import serve
from runner.baselines.classifiers import FOLDER, manifest
from runner.cli import app
from runner.datasets import digits_split
from runner.evaluate import evaluate, local_job_spec
from runner.sandboxed import model_server
from runner.spec import sniff_model_format


def test_the_manifest_lists_the_digits_cnn_in_both_formats_small_and_checksummed():
    entries = manifest()
    assert [(e["file"], e["format"]) for e in entries] == [
        ("digits_cnn.pt", "torchscript"),
        ("digits_cnn.onnx", "onnx"),
    ]
    for entry in entries:
        data = (FOLDER / entry["file"]).read_bytes()
        assert len(data) == entry["size"] < 200_000
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert sniff_model_format(data[:4096], data) == entry["format"]
        assert entry["benchmark"] == "digits" and entry["tasks"] == ["digits"] and entry["hparams"] == {}
        assert entry["family"] and entry["description"] and entry["name"] == entry["display_name"]
        assert entry["expected_metrics"]["digits"]["top1"] > 95


def test_the_torchscript_baseline_predicts_the_test_split_as_the_manifest_says_in_process():
    entry = manifest()[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = model_server.load_model(entry["path"], "torchscript", "cpu", threads=1)
    model.configure()
    _, _, images, labels = digits_split()
    logits = model.predict([images.astype(np.float32)[:, None] / np.float32(16)], [None])
    top1 = 100.0 * float(np.mean(logits.argmax(1) == labels))
    assert top1 == pytest.approx(entry["expected_metrics"]["digits"]["top1"], abs=1e-3)


@pytest.mark.usefixtures("bwrap")
def test_the_onnx_baseline_scores_in_the_sandbox_what_the_manifest_says(monkeypatch, tmp_path):
    monkeypatch.setenv("RUNNER_WORK_DIR", str(tmp_path))
    entry = manifest()[1]
    try:
        result = evaluate(local_job_spec("digits", entry["path"]), entry["path"], data_root=tmp_path)
    finally:
        serve.POOL.close_idle()
    for key, value in entry["expected_metrics"]["digits"].items():
        assert result["metrics"][key] == pytest.approx(value, abs=1e-3)


def test_baselines_export_builds_a_labelled_random_init_torchscript_that_follows_the_contract(tmp_path):
    out = tmp_path / "resnet18.pt"
    done = CliRunner().invoke(
        app,
        ["baselines", "export", "--arch", "resnet18", "--out", str(out), "--random-init"],
        env={"COLUMNS": "200"},
    )
    assert done.exit_code == 0, done.output
    assert "RANDOM INIT" in done.output and "smoke tests only" in done.output
    data = out.read_bytes()
    assert sniff_model_format(data[:4096], data) == "torchscript"
    with zipfile.ZipFile(out) as archive:
        meta = json.loads(
            archive.read(next(n for n in archive.namelist() if n.endswith("extra/leaderboard.json")))
        )
    assert meta["arch"] == "resnet18" and meta["pretrained"] is False and meta["weights"] == "random-init"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = model_server.load_model(str(out), "torchscript", "cpu", threads=1)
    model.configure()
    assert model.predict(
        [np.random.default_rng(0).random((2, 3, 224, 224), dtype=np.float32)], [None]
    ).shape == (2, 1000)


def test_baselines_export_offline_says_so_and_points_to_random_init(monkeypatch, tmp_path):
    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    done = CliRunner().invoke(
        app,
        ["baselines", "export", "--arch", "resnet18", "--out", str(tmp_path / "r.pt")],
        env={"COLUMNS": "300"},
    )
    assert done.exit_code == 1
    text = " ".join(done.output.split())
    assert "offline" in text and "--random-init" in text and "download.pytorch.org" in text
    assert not (tmp_path / "r.pt").exists()


def test_baselines_export_names_an_unknown_architecture(tmp_path):
    done = CliRunner().invoke(
        app,
        ["baselines", "export", "--arch", "resnet19", "--out", str(tmp_path / "r.pt"), "--random-init"],
        env={"COLUMNS": "300"},
    )
    assert done.exit_code == 1 and "no classification model 'resnet19'" in done.output
