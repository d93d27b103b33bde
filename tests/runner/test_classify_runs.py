"""The classifier track end to end, as a researcher and an operator meet it: `runner run` on fake
CIFAR-10-C and fake ImageNet val/A/R/C trees with a TorchScript and an ONNX model whose logits are
a known function of the pixels, every metric recomputed here by hand; and the worker path
(process_job against the stand-in site) giving the very same numbers, with one model load for two
jobs of the same submission."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from runner import data_files, datasets, serve
from runner.spec import sniff_model_format
from runner.worker import process_job

from .classifier_models import ColourClassifier, save_onnx, save_torchscript
from .fakesite import FakeJob

RUNNER = str(Path(sys.executable).parent / "runner")
FORMATS = ("torchscript", "onnx")
IMAGENET_C = data_files.load("imagenet_c")
CORRUPTIONS = tuple(IMAGENET_C["corruptions"])


# --------------------------------------------------------------------------------------------
# Fixtures: fake data (once per module) and the models.
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for name in ("CIFAR-10-C", "cifar-10-batches-py", "imagenet/val", "imagenet-a", "imagenet-r"):
        datasets.get(name).fake(root)
    datasets.get("imagenet-c").fake(root, classes=2)
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[tuple[str, str], Path]:
    folder = tmp_path_factory.mktemp("models")
    made = {}
    for family, classes, shape in (("cifar", 10, (3, 32, 32)), ("imagenet", 1000, (3, 224, 224))):
        module = ColourClassifier(classes)
        made[(family, "torchscript")] = save_torchscript(module, folder / f"{family}.pt")
        made[(family, "onnx")] = save_onnx(module, folder / f"{family}.onnx", shape)
    return made


def runner_run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [RUNNER, "run", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "COLUMNS": "120", "RUNNER_WORK_DIR": str(cwd)},
    )


@pytest.fixture(scope="module")
def cifar_runs(data_root, models, tmp_path_factory) -> dict[str, dict]:
    """`runner run --task cifar10-c` once per format; the result documents."""
    results = {}
    for fmt in FORMATS:
        out = tmp_path_factory.mktemp(f"run-cifar-{fmt}")
        done = runner_run(
            "--task",
            "cifar10-c",
            "--artifact",
            str(models[("cifar", fmt)]),
            "--data-root",
            str(data_root),
            "--out",
            str(out / "result.json"),
            cwd=out,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "sandbox: bwrap" in done.stdout and "SYNTHETIC DATA" in done.stdout
        results[fmt] = json.loads((out / "result.json").read_text())
    return results


# --------------------------------------------------------------------------------------------
# Hand computation: the model applied here, in this process, to inputs read here.
# --------------------------------------------------------------------------------------------
def logits_of(path: Path, x: np.ndarray) -> np.ndarray:
    if path.suffix == ".onnx":
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"x": x})[0]
    with torch.inference_mode():
        return torch.jit.load(str(path))(torch.from_numpy(x)).numpy()


def image_input(path: Path) -> np.ndarray:
    """torchvision's Resize(256) + CenterCrop(224) on the PIL image, to float32 CHW in [0, 1]."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.size != (224, 224):
            image = TF.center_crop(TF.resize(image, 256), 224)
        return np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / np.float32(255)


def tree_predictions(
    model: Path, folder: Path, subset: tuple[int, ...] | None
) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, true class) for every image under ``folder/<wnid>/``; with ``subset`` both
    are positions in the 200-class subset."""
    wnids = data_files.imagenet_wnids()
    files = sorted(p for p in folder.glob("*/*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    labels = np.array([wnids.index(p.parent.name) for p in files])
    logits = logits_of(model, np.stack([image_input(p) for p in files]))
    if subset is None:
        return logits.argmax(1), labels
    keep = [i for i, label in enumerate(labels) if label in subset]
    positions = np.array([subset.index(label) for label in labels[keep]])
    return logits[keep][:, list(subset)].argmax(1), positions


def percent(right: np.ndarray) -> float:
    return 100.0 * float(np.mean(right))


# --------------------------------------------------------------------------------------------
# `runner run`.
# --------------------------------------------------------------------------------------------
@pytest.mark.usefixtures("bwrap")
@pytest.mark.parametrize("fmt", FORMATS)
def test_runner_run_scores_fake_cifar10c_as_the_protocol_says(fmt, cifar_runs, data_root, models):
    result = cifar_runs[fmt]
    folder = data_root / "CIFAR-10-C"
    labels = np.load(folder / "labels.npy").astype(np.int64)
    block = len(labels) // 5
    expected: dict[str, dict[str, float]] = {}
    for name in CORRUPTIONS:
        x = np.load(folder / f"{name}.npy").transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
        predicted = logits_of(models[("cifar", fmt)], np.ascontiguousarray(x)).argmax(1)
        expected[name] = {
            str(s): percent(predicted[(s - 1) * block : s * block] == labels[(s - 1) * block : s * block])
            for s in range(1, 6)
        }
    top1 = float(np.mean([v for table in expected.values() for v in table.values()]))
    assert result["metrics"]["top1"] == pytest.approx(top1, abs=1e-9)
    assert result["metrics"]["corruption_error"] == pytest.approx(100 - top1, abs=1e-9)
    table = result["breakdown"]["per_corruption"]
    assert set(table) == set(CORRUPTIONS)
    for name in CORRUPTIONS:
        assert table[name] == pytest.approx(expected[name], abs=1e-9), name
    assert 0 < top1 < 100  # the stand-in corruptions leave something to get right and wrong
    env = result["env"]
    assert env["format"] == fmt and env["sandbox"] == "bwrap" and env["synthetic_data"] is True
    assert env["device"] == "cpu" and env["precision"].startswith(
        "fp32" if fmt == "torchscript" else "as exported"
    )
    timing = result["timing"]  # every image of every corruption file (the extras too), over the evaluation's seconds
    images = len(labels) * sum(1 for path in folder.glob("*.npy") if path.stem != "labels")
    assert timing["items_per_s"] == pytest.approx(images / timing["eval_s"], rel=1e-2)
    assert 0 < timing["compute_s"] <= timing["eval_s"]  # the model's own time is part of the evaluation's
    assert timing["checks_s"] + timing["eval_s"] <= timing["wall_s"] + 1e-3


@pytest.mark.usefixtures("bwrap")
@pytest.mark.parametrize("fmt", FORMATS)
def test_runner_run_scores_fake_imagenet_val_a_r_c_with_one_model_load(fmt, data_root, models, tmp_path):
    model = models[("imagenet", fmt)]
    done = runner_run(
        "--task",
        "imagenet-a",
        "--task",
        "imagenet-r",
        "--task",
        "imagenet-c",
        "--task",
        "imagenet-val",
        "--artifact",
        str(model),
        "--data-root",
        str(data_root),
        "--out",
        str(tmp_path / "results"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = {
        t: json.loads((tmp_path / "results" / f"result-{t}.json").read_text())
        for t in ("imagenet-val", "imagenet-a", "imagenet-r", "imagenet-c")
    }

    predicted, labels = tree_predictions(model, data_root / "imagenet" / "val", None)
    val_top1 = percent(predicted == labels)
    assert results["imagenet-val"]["metrics"]["top1"] == pytest.approx(val_top1, abs=1e-9)

    subset_a = data_files.subset_indices("imagenet_a")
    predicted, labels = tree_predictions(model, data_root / "imagenet-a", subset_a)
    assert results["imagenet-a"]["metrics"]["top1"] == pytest.approx(percent(predicted == labels), abs=1e-9)

    subset_r = data_files.subset_indices("imagenet_r")
    predicted, labels = tree_predictions(model, data_root / "imagenet-r", subset_r)
    clean, clean_labels = tree_predictions(model, data_root / "imagenet" / "val", subset_r)
    r = results["imagenet-r"]["metrics"]
    assert r["top1"] == pytest.approx(percent(predicted == labels), abs=1e-9)
    assert r["imagenet200_top1"] == pytest.approx(percent(clean == clean_labels), abs=1e-9)
    assert len(clean) < len(
        datasets.get("imagenet/val").open(data_root).targets.labels
    )  # only the 200 classes

    errors = {}
    for name in CORRUPTIONS:
        errors[name] = []
        for severity in range(1, 6):
            predicted, labels = tree_predictions(model, data_root / "imagenet-c" / name / str(severity), None)
            errors[name].append(1.0 - float(np.mean(predicted == labels)))
    alexnet = IMAGENET_C["alexnet_err"]
    ce = {c: 100 * sum(errors[c]) / sum(alexnet[c]) for c in CORRUPTIONS}
    clean_error = 1 - val_top1 / 100
    relative = {
        c: 100
        * sum(e - clean_error for e in errors[c])
        / sum(a - IMAGENET_C["alexnet_clean_err"] for a in alexnet[c])
        for c in CORRUPTIONS
    }
    c = results["imagenet-c"]
    assert c["metrics"]["top1"] == pytest.approx(100 * (1 - np.mean(list(errors.values()))), abs=1e-9)
    assert c["metrics"]["mce"] == pytest.approx(np.mean(list(ce.values())), abs=1e-9)
    assert c["breakdown"]["ce"] == pytest.approx(ce, abs=1e-9)
    assert c["metrics"]["relative_mce"] == pytest.approx(np.mean(list(relative.values())), abs=1e-9)
    assert (
        c["env"]["clean_top1"] == pytest.approx(val_top1, abs=1e-9)
        and c["env"]["clean_top1_source"] == "task params"
    )
    assert set(c["breakdown"]["extra_corruptions"]) == set(IMAGENET_C["extra_corruptions"])

    # One server answered all four, in the order given except that imagenet-val moved before
    # imagenet-c, which needs its top-1.
    servers = {t: results[t]["env"]["model_server"] for t in results}
    assert [
        servers[t]["jobs_served"] for t in ("imagenet-a", "imagenet-r", "imagenet-val", "imagenet-c")
    ] == [1, 2, 3, 4]
    assert [servers[t]["reused"] for t in ("imagenet-a", "imagenet-r", "imagenet-val", "imagenet-c")] == [
        False,
        True,
        True,
        True,
    ]


# --------------------------------------------------------------------------------------------
# The worker path.
# --------------------------------------------------------------------------------------------
class ClassifierJob(FakeJob):
    """The stand-in site's job, for a classifier submission."""

    def spec(self):
        spec = super().spec()
        spec.task.kind = spec.submission.kind = "classifier"
        spec.submission.artifact_format = sniff_model_format(self.artifact[:4096], self.artifact)
        return spec


@pytest.mark.usefixtures("bwrap")
def test_the_worker_gives_the_numbers_of_runner_run_and_loads_the_model_once_for_two_jobs(
    site, client, cifar_runs, data_root, models, monkeypatch, tmp_path
):
    monkeypatch.setenv("RUNNER_WORK_DIR", str(tmp_path))
    serve.POOL.close_idle()
    loads = serve.POOL.loads
    artifact = models[("cifar", "onnx")].read_bytes()
    first = site.jobs[41] = ClassifierJob(41, "cifar10-c", artifact, {}, heartbeat_seconds=1)
    second = site.jobs[42] = ClassifierJob(42, "cifar10", artifact, {})
    try:
        assert process_job(41, client, data_root=data_root, pools=["gpu"]) == "succeeded"
        assert process_job(42, client, data_root=data_root, pools=["gpu"]) == "succeeded"
        assert serve.POOL.idle_count() == 1  # still warm for this submission's next job
    finally:
        serve.POOL.close_idle()
    assert serve.POOL.loads == loads + 1
    worker, local = first.results[0]["result"], cifar_runs["onnx"]
    for key in ("metrics", "ci95", "breakdown"):
        assert worker[key] == local[key]
    assert worker["env"]["model_server"]["reused"] is False
    assert second.results[0]["result"]["env"]["model_server"]["reused"] is True
    assert second.results[0]["result"]["env"]["model_server"]["jobs_served"] == 2
    progress = [beat["progress"] for beat in first.heartbeats]
    assert progress == sorted(progress)
