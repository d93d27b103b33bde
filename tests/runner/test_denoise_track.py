"""The denoising track as a researcher meets it: a denoiser file run through the same path as a
site job (the sandboxed model server), the noise setting handed to models that ask for it, the
errors a broken denoiser gets, BM3D as a builtin baseline, fake data marked synthetic, and the
`runner run` / `runner baselines` commands."""
from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from runner import serve
from runner.cli import app
from runner.datasets.denoise import open_set
from runner.denoise import Noise, make_noisy_inputs, psnr
from runner.denoise.baselines import export_baselines
from runner.denoise.noise2score import checkpoint_entries
from runner.evaluate import evaluate, local_job_spec, supported_tasks
from runner.spec import ErrorKind, EvaluationError

from .classifier_models import save_torchscript

TASK = "denoise-skimage-gray-gauss25"


@pytest.fixture(autouse=True)
def no_warm_servers(request, monkeypatch, tmp_path):
    if "bwrap" in request.fixturenames:
        request.getfixturevalue("bwrap")
    monkeypatch.setenv("RUNNER_WORK_DIR", str(tmp_path))
    yield
    serve.POOL.close_idle()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_baselines(tmp_path_factory.mktemp("denoisers"))


def run(task: str, path: Path, hparams: dict | None = None, *, data_root: Path | str = "/nonexistent",
        time_limit_s: int | None = None, is_baseline: bool | None = None) -> dict:
    spec = local_job_spec(task, path, hparams, time_limit_s=time_limit_s)
    if is_baseline is not None:
        spec = replace(spec, submission=replace(spec.submission, is_baseline=is_baseline))
    return evaluate(spec, path, data_root=data_root)


class Halve(torch.nn.Module):
    """Blind: shrinks towards mid-gray (a poor denoiser with a known PSNR)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x + 0.25


class ChecksNoise(torch.nn.Module):
    """Wants the noise level and refuses to run unless it is exactly the task's."""

    def __init__(self, code: float, level: float):
        super().__init__()
        self.wants_noise_level = True
        self.code, self.level = code, level

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        if noise.shape[0] != x.shape[0] or noise.shape[1] != 2:
            raise RuntimeError("noise must be [N, 2]")
        if bool((noise[:, 0] != self.code).any()) or bool((torch.abs(noise[:, 1] - self.level) > 1e-6).any()):
            raise RuntimeError("wrong noise setting")
        return x


class Remembers(torch.nn.Module):
    """Keeps state between calls: the output drifts with the number of images it has seen."""

    def __init__(self):
        super().__init__()
        self.seen = torch.zeros(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += 1.0
        return x * 0.9 + 0.01 * self.seen


class RemembersLargeImages(torch.nn.Module):
    """Keeps state between calls, but only on images larger than the contract probe's crops
    (runner.contract_checks.DENOISE_CROP): the probe sees a deterministic model."""

    def __init__(self):
        super().__init__()
        self.seen = torch.zeros(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] > 64:
            self.seen += 1.0
        return x * 0.9 + 0.01 * self.seen


class Crops(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, 1:, :]


class NaNs(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float("nan")


class Integers(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 255).to(torch.uint8)


@pytest.mark.usefixtures("bwrap")
def test_a_blind_denoiser_is_scored_on_the_protocols_noisy_images_in_the_sandbox(tmp_path):
    path = save_torchscript(Halve(), tmp_path / "halve.pt")
    result = run(TASK, path)
    clean = open_set("skimage-gray").images
    noisy = make_noisy_inputs(TASK, clean, Noise("gaussian", 25.0))
    expected = {stem: psnr(0.5 * noisy[stem] + 0.25, clean[stem]) for stem in clean}
    for stem, value in expected.items():
        assert result["breakdown"]["per_image"][stem]["psnr"] == pytest.approx(value, abs=1e-4)
    assert result["metrics"]["psnr"] == pytest.approx(np.mean(list(expected.values())), abs=1e-4)
    assert result["env"]["sandbox"] == "bwrap" and result["env"]["noise_level_input"] is False
    assert result["env"]["synthetic_data"] is False and result["env"]["n_images"] == 8
    timing = result["timing"]
    megapixels = sum(image.shape[0] * image.shape[1] for image in clean.values()) / 1e6
    assert timing["seconds_per_megapixel"] == pytest.approx(timing["denoise_s"] / megapixels)
    assert timing["load_s"] > 0  # a fresh model process for every denoising job, never a warm one
    assert timing["load_s"] + timing["checks_s"] + timing["denoise_s"] <= timing["wall_s"]
    assert len(result["breakdown"]["samples"]) == 2


@pytest.mark.usefixtures("bwrap")
@pytest.mark.parametrize("task, code, level", [("denoise-skimage-gray-gauss50", 0, 50.0),
                                               ("denoise-skimage-color-poisson0.01", 1, 0.01),
                                               ("denoise-skimage-gray-gamma100", 2, 100.0)])
def test_a_model_that_wants_the_noise_level_gets_the_family_code_and_the_level(tmp_path, task, code, level):
    path = save_torchscript(ChecksNoise(code, level), tmp_path / "checks.pt")
    result = run(task, path)
    assert result["env"]["noise_level_input"] is True
    wrong = save_torchscript(ChecksNoise(code, level * 2), tmp_path / "wrong.pt")
    with pytest.raises(EvaluationError) as caught:
        run(task, wrong)
    assert caught.value.kind == ErrorKind.RUNTIME_ERROR and "wrong noise setting" in caught.value.message


@pytest.mark.usefixtures("bwrap")
def test_an_onnx_denoiser_with_two_inputs_gets_the_noise_and_one_with_one_input_does_not(tmp_path):
    class Shrink(torch.nn.Module):
        def forward(self, x, noise):
            return x * (1.0 - noise[:, 1].view(-1, 1, 1, 1) / 1000.0)

    class Blind(torch.nn.Module):
        def forward(self, x):
            return x * 0.9 + 0.05

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        axes = {"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}}
        torch.onnx.export(Shrink().eval(), (torch.rand(1, 1, 16, 16), torch.tensor([[0.0, 25.0]])),
                          str(tmp_path / "two.onnx"), dynamo=False, input_names=["x", "noise"], output_names=["y"],
                          dynamic_axes={**axes, "noise": {0: "n"}}, opset_version=17)
        torch.onnx.export(Blind().eval(), (torch.rand(1, 1, 16, 16),), str(tmp_path / "one.onnx"), dynamo=False,
                          input_names=["x"], output_names=["y"], dynamic_axes=axes, opset_version=17)
    two, one = run(TASK, tmp_path / "two.onnx"), run(TASK, tmp_path / "one.onnx")
    assert two["env"]["format"] == one["env"]["format"] == "onnx"
    assert two["env"]["noise_level_input"] is True and one["env"]["noise_level_input"] is False
    clean = open_set("skimage-gray").images
    noisy = make_noisy_inputs(TASK, clean, Noise("gaussian", 25.0))
    stem = "camera"
    assert two["breakdown"]["per_image"][stem]["psnr"] == pytest.approx(
        psnr(noisy[stem] * (1 - 25.0 / 1000.0), clean[stem]), abs=1e-3)


@pytest.mark.usefixtures("bwrap")
def test_every_job_gets_a_fresh_model_so_nothing_carries_over_between_noise_settings(tmp_path):
    path = save_torchscript(RemembersLargeImages(), tmp_path / "remembers.pt")
    first, second = run(TASK, path), run(TASK, path)
    assert second["env"]["model_server"]["reused"] is False
    assert second["breakdown"]["per_image"] == first["breakdown"]["per_image"]


@pytest.mark.usefixtures("bwrap")
@pytest.mark.parametrize("module, kind, fragment", [
    # Found on the contract probe's crops, before the set runs.
    (Crops(), ErrorKind.WRONG_OUTPUT, "shape [2, 1, 63, 64] for noisy crops of shape [2, 1, 64, 64]"),
    (NaNs(), ErrorKind.NOT_FINITE, "NaN or infinite"),
    (Integers(), ErrorKind.WRONG_OUTPUT, "return float32 pixels"),
    # State kept between calls: the same crop twice gives other pixels (runner.contract_checks).
    (Remembers(), ErrorKind.WRONG_OUTPUT, "different outputs for the same noisy crop run twice"),
])
def test_a_denoiser_that_breaks_the_contract_gets_an_error_naming_it(tmp_path, module, kind, fragment):
    path = save_torchscript(module, tmp_path / "broken.pt")
    with pytest.raises(EvaluationError) as caught:
        run(TASK, path)
    assert caught.value.kind == kind and fragment in caught.value.message, caught.value.message


def test_hyperparameters_a_denoiser_does_not_take_are_refused_before_anything_runs(tmp_path, exported):
    with pytest.raises(EvaluationError) as caught:
        run(TASK, exported["identity"], {"lr": 0.1})
    assert caught.value.kind == ErrorKind.BAD_HPARAMS and "precision, channels_last" in caught.value.message


def test_bm3d_runs_as_a_builtin_for_a_baseline_and_is_refused_for_anyone_else(exported, tmp_path):
    result = run("denoise-skimage-gray-gamma50", exported["bm3d"])
    assert result["env"]["builtin_baseline"] == "bm3d" and result["env"]["sandbox"].startswith("none")
    assert result["metrics"]["psnr"] > 31.0  # noisy input: 23.63 dB on this set
    with pytest.raises(EvaluationError) as caught:  # only the site's own mistake could send this
        run("denoise-skimage-gray-gamma50", exported["bm3d"], is_baseline=False)
    assert caught.value.kind == ErrorKind.RUNNER_ERROR and "not flagged as one" in caught.value.message
    fake = tmp_path / "nlm.json"
    fake.write_text('{"builtin_baseline": "non-local-means"}')
    with pytest.raises(EvaluationError) as caught:
        run(TASK, fake)
    assert caught.value.kind == ErrorKind.INVALID_ARTIFACT and "known: bm3d" in caught.value.message


def test_a_builtin_that_runs_past_the_time_limit_stops_with_a_timeout(exported):
    with pytest.raises(EvaluationError) as caught:
        run("denoise-skimage-color-gauss50", exported["bm3d"], time_limit_s=1)
    assert caught.value.kind == ErrorKind.TIMEOUT


@pytest.mark.usefixtures("bwrap")
def test_a_fake_test_set_is_scored_and_marked_synthetic_and_a_missing_one_is_dataset_missing(tmp_path, exported):
    root = tmp_path / "data"
    with pytest.raises(EvaluationError) as caught:
        run("denoise-cbsd68-gauss25", exported["identity"], data_root=root)
    assert caught.value.kind == ErrorKind.DATASET_MISSING and "runner data" in caught.value.message
    assert CliRunner().invoke(app, ["data", "fake", "denoise/cbsd68", "--root", str(root)]).exit_code == 0
    result = run("denoise-cbsd68-gauss25", exported["median-filter"], data_root=root)
    assert result["env"]["synthetic_data"] is True and result["env"]["dataset"] == "cbsd68"
    assert result["metrics"]["psnr"] > run("denoise-cbsd68-gauss25", exported["identity"], data_root=root)["metrics"]["psnr"]


def test_every_denoising_task_of_the_catalogue_has_a_track():
    from runner.catalogue import CATALOGUE

    denoising = {t.slug for b in CATALOGUE if b.kind == "denoiser" for t in b.tasks}
    assert len(denoising) == 36 and denoising <= set(supported_tasks())


@pytest.mark.usefixtures("bwrap")
def test_runner_run_prints_and_writes_the_result_of_a_denoiser(tmp_path, exported):
    out = tmp_path / "result.json"
    answer = CliRunner().invoke(app, ["run", "--task", TASK, "--artifact", str(exported["gaussian-filter"]),
                                      "--out", str(out)])
    assert answer.exit_code == 0, answer.output
    assert "psnr" in answer.output and json.loads(out.read_text())["metrics"]["psnr"] == pytest.approx(26.94, abs=0.01)


def test_runner_baselines_train_noise2score_writes_a_checkpoint_the_track_can_load(tmp_path):
    out = tmp_path / "n2s.safetensors"
    answer = CliRunner().invoke(app, ["baselines", "train", "noise2score", "--out", str(out), "--noise", "gauss25",
                                      "--noise", "gamma50", "--steps", "2", "--width", "4"])
    assert answer.exit_code == 0, answer.output
    entries = checkpoint_entries(out)
    assert sorted(entries) == ["gamma50", "gauss25"] and entries["gauss25"]["steps"] == 2
    bad = CliRunner().invoke(app, ["baselines", "train", "noise2score", "--out", str(out), "--noise", "gauss30"])
    assert bad.exit_code != 0 and "gauss30" in bad.output
    bad = CliRunner().invoke(app, ["baselines", "train", "dncnn", "--out", str(out)])
    assert bad.exit_code != 0 and "noise2score" in bad.output


def test_runner_baselines_denoisers_writes_the_artifacts_and_their_manifest(tmp_path):
    answer = CliRunner().invoke(app, ["baselines", "denoisers", "--out", str(tmp_path)])
    assert answer.exit_code == 0, answer.output
    manifest = json.loads((tmp_path / "baselines.json").read_text())
    assert {k: v["format"] for k, v in manifest.items()} == {
        "identity": "torchscript", "gaussian-filter": "torchscript", "median-filter": "torchscript",
        "noise2score": "torchscript", "bm3d": "builtin"}
