"""What a researcher gets back when a classifier submission breaks the contract, on the real
digits task: refused pickles, wrong shapes, NaN, out of memory, settings that do not fit, a file
that does not load, a job the site takes back, and a model that runs past its time."""

from __future__ import annotations

import threading
import warnings
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from runner import contract_checks, serve
from runner.datasets import digits_split
from runner.evaluate import evaluate, local_job_spec
from runner.spec import PICKLE_ADVICE, ErrorKind, EvaluationError

from .classifier_models import (
    FakeOutOfMemory,
    NaNAfterFirst,
    WrongShape,
    save_checkpoint,
    save_onnx,
    save_pickle,
    save_pt2,
    save_torchscript,
)


@pytest.fixture(autouse=True)
def no_warm_servers(request, monkeypatch, tmp_path):
    """Model servers work under this test's folder, and none outlives the test (closed before the
    sandbox fixture looks for leftover processes)."""
    if "bwrap" in request.fixturenames:
        request.getfixturevalue("bwrap")
    monkeypatch.setenv("RUNNER_WORK_DIR", str(tmp_path))
    yield
    serve.POOL.close_idle()


def run_digits(path: Path, hparams: dict | None = None, **options) -> dict:
    spec = local_job_spec("digits", path, hparams)
    params = options.pop("params", None)
    if params:
        spec.task.params.update(params)
    if "time_limit_s" in options:
        spec = replace(spec, task=replace(spec.task, time_limit_s=options.pop("time_limit_s")))
    return evaluate(spec, path, data_root="/nonexistent", **options)


class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class Spins(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.flatten(1)[:, :10]
        for _ in range(100_000_000):
            y = y + 1.0
        return y


def test_pickles_and_torch_save_checkpoints_are_refused_with_the_export_advice(tmp_path):
    for path, what in (
        (save_pickle(tmp_path / "model.pkl"), "a Python pickle"),
        (save_checkpoint(Linear(), tmp_path / "model.pth"), "torch.save checkpoint"),
    ):
        with pytest.raises(EvaluationError) as refused:
            local_job_spec("digits", path)
        assert refused.value.kind == ErrorKind.INVALID_ARTIFACT
        assert what in refused.value.message and PICKLE_ADVICE in refused.value.message
    # A spec that names another format changes nothing: the track sniffs the content itself.
    spec = local_job_spec("digits", save_torchscript(Linear(), tmp_path / "ok.pt"))
    with pytest.raises(EvaluationError) as refused:
        evaluate(spec, tmp_path / "model.pth", data_root="/nonexistent")
    assert refused.value.kind == ErrorKind.INVALID_ARTIFACT and PICKLE_ADVICE in refused.value.message


def test_hyperparameters_that_do_not_fit_a_classifier_are_refused_before_anything_runs(tmp_path):
    path = save_onnx(Linear(), tmp_path / "model.onnx", (1, 8, 8))
    for hparams, words in (
        ({"precision": "fp16"}, 'use "fp32"'),
        ({"lr": 0.1}, "unknown hyperparameters"),
        ({"clean_top1": 140}, "clean_top1"),
    ):
        with pytest.raises(EvaluationError) as refused:
            run_digits(path, hparams)
        assert refused.value.kind == ErrorKind.BAD_HPARAMS and words in refused.value.message


@pytest.mark.usefixtures("bwrap")
def test_one_model_in_three_formats_scores_the_same_and_matches_a_hand_count(tmp_path):
    module = Linear().eval()
    _, _, images, labels = digits_split()
    with torch.inference_mode():
        predicted = (
            module(torch.from_numpy(images.astype(np.float32)[:, None] / np.float32(16))).argmax(1).numpy()
        )
    expected = 100.0 * float(np.mean(predicted == labels))
    results = {
        fmt: run_digits(save(module, tmp_path / f"model.{fmt}"))
        for fmt, save in (
            ("pt", save_torchscript),
            ("onnx", lambda m, p: save_onnx(m, p, (1, 8, 8))),
            ("pt2", lambda m, p: save_pt2(m, p, (1, 8, 8))),
        )
    }
    for fmt, result in results.items():
        assert result["metrics"]["top1"] == pytest.approx(expected, abs=1e-9), fmt
        assert result["env"]["synthetic_data"] is False and result["env"]["dataset"] == "sklearn-digits"
    assert [r["env"]["format"] for r in results.values()] == ["torchscript", "onnx", "pt2"]


@pytest.mark.usefixtures("bwrap")
def test_a_wrong_output_shape_is_a_wrong_output_error_naming_the_expected_shape(tmp_path):
    with pytest.raises(EvaluationError) as failed:
        run_digits(save_torchscript(WrongShape(), tmp_path / "model.pt"))
    assert failed.value.kind == ErrorKind.WRONG_OUTPUT
    # Found on the contract probe's first images, before the task's data runs.
    n = contract_checks.PROBE_ITEMS
    assert f"shape [{n}, 7]" in failed.value.message and f"[{n}, 10]" in failed.value.message


@pytest.mark.usefixtures("bwrap")
def test_nan_logits_are_a_not_finite_error(tmp_path):
    with pytest.raises(EvaluationError) as failed:
        run_digits(save_onnx(NaNAfterFirst(), tmp_path / "model.onnx", (1, 8, 8)))
    n = contract_checks.PROBE_ITEMS  # found on the contract probe's first batch
    assert failed.value.kind == ErrorKind.NOT_FINITE and f"{n - 1} images" in failed.value.message


@pytest.mark.usefixtures("bwrap")
def test_out_of_memory_retries_with_smaller_batches_and_gives_up_at_one_image(tmp_path):
    result = run_digits(save_torchscript(FakeOutOfMemory(100), tmp_path / "fits.pt"))
    assert result["env"]["batch_size"] == 64 and result["env"]["oom_retries"] >= 2
    _, _, images, labels = digits_split()
    expected = 100.0 * float(np.mean(images.reshape(len(images), -1)[:, :10].argmax(1) == labels))
    assert result["metrics"]["top1"] == pytest.approx(expected, abs=1e-9)
    with pytest.raises(EvaluationError) as failed:
        run_digits(save_torchscript(FakeOutOfMemory(0), tmp_path / "never.pt"))
    assert failed.value.kind == ErrorKind.OUT_OF_MEMORY and "one item at a time" in failed.value.message


@pytest.mark.usefixtures("bwrap")
def test_a_file_that_looks_like_torchscript_but_does_not_load_is_an_invalid_artifact(tmp_path):
    path = tmp_path / "broken.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/code/__torch__.py", "this is not TorchScript")
        archive.writestr("model/constants.pkl", b"\x80\x02junk")
    with pytest.raises(EvaluationError) as failed:
        run_digits(path)
    assert (
        failed.value.kind == ErrorKind.INVALID_ARTIFACT
        and "cannot load the TorchScript file" in failed.value.message
    )


@pytest.mark.usefixtures("bwrap")
def test_a_job_the_site_takes_back_stops_the_model_server_between_batches(tmp_path):
    cancel = threading.Event()
    seen: list[float] = []

    def progress(fraction: float, message: str) -> None:
        seen.append(fraction)
        if "images" in message:
            cancel.set()

    with pytest.raises(EvaluationError) as stopped:
        run_digits(
            save_onnx(Linear(), tmp_path / "model.onnx", (1, 8, 8)),
            params={"batch_size": 8},
            progress=progress,
            cancel=cancel,
        )
    assert stopped.value.kind == ErrorKind.LEASE_EXPIRED
    assert len([f for f in seen if f > 0.05]) < 10  # 450 images in batches of 8 would be 57 batches
    assert serve.POOL.idle_count() == 0


@pytest.mark.usefixtures("bwrap")
def test_a_model_that_runs_past_the_time_limit_is_stopped_with_a_timeout(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = save_torchscript(Spins(), tmp_path / "spins.pt")
    with pytest.raises(EvaluationError) as stopped:
        run_digits(path, time_limit_s=5)
    assert stopped.value.kind == ErrorKind.TIMEOUT and "time limit" in stopped.value.message
    assert serve.POOL.idle_count() == 0
