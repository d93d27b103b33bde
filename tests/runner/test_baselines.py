"""The eight reference optimizers the site submits as baselines: the files it reads as plain
text, the settings in baselines.json, and the corrected diffGrad."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import runner
from runner.evaluate import evaluate, local_job_spec
from runner.sandboxed.optimizer_loader import compile_source, exec_module
from runner.tracks.synthetic_functions import optimize_synthetic

BASELINES = Path(runner.__file__).parent / "baselines" / "optimizers"
# The eight reference optimizers; the seed methods (family "seed method") are tests/runner/test_seed_optimizers.py's.
MANIFEST = [entry for entry in json.loads((BASELINES / "baselines.json").read_text())["baselines"]
            if entry["family"] == "reference optimizer"]
BY_FILE = {entry["file"]: entry for entry in MANIFEST}


def synthetic_hparams(entry: dict) -> dict:
    return entry["hparams_by_benchmark"]["opt-synthetic"]


def trajectory(file: str, function: str, hparams: dict | None = None) -> list[float]:
    path = BASELINES / file
    return optimize_synthetic(path.read_text(), str(path), hparams or synthetic_hparams(BY_FILE[file]), function,
                              -1.0, 300)["x"]


def test_the_manifest_lists_the_eight_reference_optimizers_by_display_name():
    names = [entry["display_name"] for entry in MANIFEST]
    assert names == ["SGD with momentum", "AdaGrad", "AdaDelta", "RMSProp", "AMSGrad", "Adam", "AdamW",
                     "diffGrad (corrected)"]
    for entry in MANIFEST:
        assert (BASELINES / entry["file"]).is_file()
        assert entry["name"] == entry["display_name"]
        assert entry["hparams"] == synthetic_hparams(entry)
        assert set(entry["hparams_by_benchmark"]) == {"opt-synthetic", "opt-digits", "opt-cifar10-resnet18",
                                                      "opt-cifar100-resnet18", "opt-text-transformer"}


@pytest.mark.parametrize("file", sorted(BY_FILE))
def test_each_baseline_runs_f1_f2_f3_deterministically_to_a_finite_point(file):
    for function in ("f1", "f2", "f3"):
        first, second = trajectory(file, function), trajectory(file, function)
        assert first == second
        assert len(first) == 301 and all(abs(x) < 10 for x in first)


def test_the_adam_family_uses_the_papers_synthetic_settings():
    for file in ("adam.py", "amsgrad.py", "adamw.py", "diffgrad.py"):
        hparams = synthetic_hparams(BY_FILE[file])
        assert (hparams["lr"], hparams["beta1"], hparams["beta2"]) == (0.1, 0.95, 0.999)


def test_corrected_diffgrad_keeps_a_copy_of_the_previous_gradient_so_its_friction_varies():
    module = exec_module(compile_source((BASELINES / "diffgrad.py").read_text(), "diffgrad.py"), "diffgrad.py")
    x = torch.tensor([-1.0], requires_grad=True)
    optimizer = module.make_optimizer([x], lr=0.1, beta1=0.95, beta2=0.999)
    assert type(optimizer).__name__ == "DiffGradCorrected"
    frictions, grads = [], []
    for _ in range(5):
        optimizer.zero_grad(set_to_none=False)  # in-place zeroing: the case the original got wrong
        loss = ((x + 0.3) ** 2).sum()
        loss.backward()
        optimizer.step()
        grads.append(x.grad.clone())
        state = optimizer.state[x]
        assert state["previous_grad"] is not x.grad and torch.equal(state["previous_grad"], x.grad)
        frictions.append(float(state["friction"]))
    assert frictions[0] == pytest.approx(float(torch.sigmoid(grads[0].abs())))  # g_0 = 0
    assert all(f != pytest.approx(0.5) for f in frictions)
    assert len(set(frictions)) == len(frictions)


def test_corrected_diffgrad_differs_from_adam_and_reaches_f1s_global_minimum_where_adam_does_not():
    settings = synthetic_hparams(BY_FILE["adam.py"])
    diffgrad, adam = trajectory("diffgrad.py", "f1", settings), trajectory("adam.py", "f1", settings)
    assert diffgrad != adam
    assert diffgrad[-1] == pytest.approx(-0.3, abs=1e-3)  # F1's global minimum
    assert adam[-1] == pytest.approx(0.2, abs=1e-3)  # Adam overshoots into the local one, as in the paper


@pytest.mark.usefixtures("bwrap")
def test_a_baseline_file_with_its_manifest_settings_evaluates_in_the_sandbox():
    path = BASELINES / "diffgrad.py"
    result = evaluate(local_job_spec("opt-f1", path, synthetic_hparams(BY_FILE["diffgrad.py"])), path,
                      data_root="/nonexistent")
    assert result["metrics"]["final_x"] == pytest.approx(trajectory("diffgrad.py", "f1")[-1])
    assert result["env"]["sandbox"] == "bwrap"
