"""Reference denoisers: their ranking on real photographs, their TorchScript artifacts, BM3D's
variance-stabilising transforms, Tweedie's formulas and the Noise2Score training entry point."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.ndimage
import torch

from runner.datasets.denoise import open_set
from runner.denoise import baselines
from runner.denoise.baselines import (
    BASELINES,
    anscombe,
    export_baselines,
    inverse_anscombe,
    run_denoiser,
    run_module,
)
from runner.denoise.metrics import score_estimates
from runner.denoise.modules import (
    Noise2ScoreDenoiser,
    Noise2ScoreNet,
    call_module,
    gaussian_blur,
    median_blur,
    wants_noise_level,
)
from runner.denoise.noise import Noise, make_noisy_inputs
from runner.denoise.noise2score import checkpoint_entries, load_noise2score_nets, train_noise2score

STEMS = ["camera", "coins", "astronaut"]


@pytest.fixture(scope="module")
def small_gray():
    """Three skimage-gray photographs, centre 128×128, to keep BM3D quick."""
    images = open_set("skimage-gray", stems=STEMS).images
    return {s: im[64:192, 64:192] for s, im in images.items()}


def _score(name, task, images):
    noise = Noise.from_task(task)
    noisy = make_noisy_inputs(task, images, noise)
    estimates, seconds = run_denoiser(BASELINES[name].denoise, noisy, noise)
    return score_estimates(task, images, estimates, synthetic=False, noisy=noisy, noise=noise,
                           denoise_seconds=seconds)["metrics"]


def test_on_gaussian_noise_bm3d_beats_the_gaussian_filter_which_beats_the_noisy_input(small_gray):
    task = "denoise-skimage-gray-gauss25"
    noisy, gaussian, bm3d = (_score(n, task, small_gray) for n in ("identity", "gaussian-filter", "bm3d"))
    print(f"PSNR noisy {noisy['psnr']:.2f}, Gaussian filter {gaussian['psnr']:.2f}, BM3D {bm3d['psnr']:.2f}")
    assert bm3d["psnr"] > gaussian["psnr"] > noisy["psnr"]
    assert bm3d["ssim"] > gaussian["ssim"] > noisy["ssim"]


@pytest.mark.parametrize("noise", ["gauss25", "gauss50", "poisson0.01", "poisson0.05", "gamma100", "gamma50"])
def test_noise2score_with_the_shipped_checkpoint_beats_the_noisy_input(small_gray, noise):
    task = f"denoise-skimage-gray-{noise}"
    noisy, n2s = _score("identity", task, small_gray), _score("noise2score", task, small_gray)
    print(f"{noise}: PSNR noisy {noisy['psnr']:.2f}, Noise2Score {n2s['psnr']:.2f}")
    assert n2s["psnr"] > noisy["psnr"] + 1.0
    assert n2s["ssim"] > noisy["ssim"]


def test_the_shipped_checkpoint_holds_the_six_protocol_settings_trained_off_the_test_photographs():
    entries = checkpoint_entries()
    assert sorted(entries) == sorted(["gauss25", "gauss50", "poisson0.01", "poisson0.05", "gamma100", "gamma50"])
    test_photographs = {"camera", "moon", "coins", "text", "brick", "grass", "astronaut", "coffee",
                        "chelsea", "rocket", "immunohistochemistry", "retina"}
    for entry in entries.values():
        assert entry["images"] and not {s.split("_")[0] for s in entry["images"]} & test_photographs


@pytest.mark.parametrize("noise", [Noise("poisson", 0.05), Noise("gamma", 50.0)])
def test_bm3d_through_a_variance_stabilising_transform_denoises_poisson_and_gamma_noise(small_gray, noise):
    image = small_gray["camera"][:64, :64]
    task = f"denoise-skimage-gray-{noise.slug}"
    noisy = make_noisy_inputs(task, {"camera": image}, noise)["camera"]
    from runner.denoise.metrics import psnr

    assert psnr(baselines.bm3d(noisy, noise), image) > psnr(noisy, image) + 3.0


def test_the_inverse_anscombe_transform_is_unbiased_for_poisson_counts():
    from scipy.stats import poisson

    for mean in (3.0, 10.0, 50.0):
        counts = np.arange(0, int(mean + 20 * np.sqrt(mean)) + 20)
        expected_transform = float(np.sum(poisson.pmf(counts, mean) * anscombe(counts)))
        assert inverse_anscombe(np.float64(expected_transform)) == pytest.approx(mean, rel=0.01)


def test_the_gaussian_filter_equals_scipys_mirror_mode_gaussian():
    image = np.random.default_rng(0).random((1, 2, 30, 27)).astype(np.float32)
    for sigma in (1.0, 2.2):
        ours = gaussian_blur(torch.from_numpy(image), sigma).numpy()
        theirs = np.stack([scipy.ndimage.gaussian_filter(image[0, c].astype(np.float64), sigma, mode="mirror",
                                                         truncate=3.0) for c in range(2)])[None]
        assert np.abs(ours - theirs).max() < 1e-5


def test_the_median_filter_equals_scipys_nearest_mode_median():
    image = np.random.default_rng(1).random((1, 1, 25, 31)).astype(np.float32)
    for size in (3, 5):
        ours = median_blur(torch.from_numpy(image), size).numpy()[0, 0]
        assert np.array_equal(ours, scipy.ndimage.median_filter(image[0, 0], size=size, mode="nearest"))


class _KnownScore(Noise2ScoreNet):
    """A score 'network' that returns a fixed function, to check Tweedie's formulas alone."""

    def score(self, v):
        return -0.5 * v + 0.2


def test_tweedie_formulas_follow_the_protocol_for_each_family():
    y = torch.linspace(0.05, 1.2, 50).view(1, 1, 5, 10)
    sigma = 25.0 / 255.0
    assert torch.allclose(_KnownScore("gaussian", 25.0)(y), y + sigma**2 * (-0.5 * y + 0.2))
    zeta = 0.05
    assert torch.allclose(_KnownScore("poisson", zeta)(y), (y + zeta / 2) * torch.exp(-0.5 * (y / zeta) + 0.2))
    k = 50.0
    assert torch.allclose(_KnownScore("gamma", k)(y), k * y / ((k - 1) - y * (-0.5 * y + 0.2)))


def test_tweedie_with_the_exact_score_of_a_gaussian_prior_gives_the_posterior_mean():
    # x ~ N(m, t²), y = x + N(0, s²): score of y is −(y − m)/(t² + s²), E[x|y] = m + t²/(t² + s²)(y − m).
    m, t2, s2 = 0.4, 0.03, (25.0 / 255.0) ** 2

    class Exact(Noise2ScoreNet):
        def score(self, v):
            return -(v - m) / (t2 + s2)

    y = torch.linspace(-0.2, 1.2, 20).view(1, 1, 4, 5)
    assert torch.allclose(Exact("gaussian", 25.0)(y), m + t2 / (t2 + s2) * (y - m), atol=1e-6)


def test_exported_torchscript_baselines_are_ordinary_artifacts_that_match_the_functions(tmp_path, small_gray):
    from runner.spec import read_builtin_baseline, sniff_model_format

    paths = export_baselines(tmp_path)
    assert sorted(paths) == ["bm3d", "gaussian-filter", "identity", "median-filter", "noise2score"]
    manifest = json.loads((tmp_path / "baselines.json").read_text())
    assert manifest["bm3d"]["format"] == "builtin" and manifest["bm3d"]["trusted_in_process"] is True
    assert read_builtin_baseline(paths.pop("bm3d").read_bytes(), "denoiser") == "bm3d"
    image = np.concatenate([small_gray["camera"][:40, :48]] * 3, axis=2)  # a colour-shaped input
    for name, path in paths.items():
        data = path.read_bytes()
        assert sniff_model_format(data[:4096], data) == "torchscript"
        module = torch.jit.load(str(path))
        assert wants_noise_level(module) == manifest[name]["wants_noise_level"] == (name != "identity")
        for noise in (Noise("gaussian", 50.0), Noise("poisson", 0.01), Noise("gamma", 100.0)):
            noisy = make_noisy_inputs(f"denoise-skimage-color-{noise.slug}", {"x": image}, noise)["x"]
            expected = BASELINES[name].denoise(noisy, noise)
            assert np.abs(run_module(module, noisy, noise) - expected).max() < 1e-5, (name, noise)


def test_a_module_that_breaks_the_shape_contract_is_refused():
    class Cropper(torch.nn.Module):
        def forward(self, x):
            return x[:, :, 1:, :]

    with pytest.raises(ValueError, match="contract"):
        call_module(Cropper(), torch.zeros(1, 1, 8, 8), Noise("gaussian", 25.0))


def test_train_noise2score_adds_each_setting_to_one_safetensors_checkpoint(tmp_path, small_gray):
    out = tmp_path / "n2s.safetensors"
    images = {s: im for s, im in small_gray.items()}
    train_noise2score(images, family="gaussian", level=25.0, steps=3, seed=1, out_path=out, clean=True, width=4)
    train_noise2score(images, family="gamma", level=50.0, steps=3, seed=2, out_path=out, clean=True, width=4)
    header_length = int.from_bytes(out.read_bytes()[:8], "little")
    assert out.read_bytes()[8:9] == b"{" and header_length < out.stat().st_size, "safetensors, not a pickle"
    entries = checkpoint_entries(out)
    assert sorted(entries) == ["gamma50", "gauss25"]
    assert entries["gauss25"]["steps"] == 3 and entries["gauss25"]["images"] == list(images)
    assert entries["gamma50"]["family"] == "gamma" and entries["gamma50"]["seed"] == 2
    nets = load_noise2score_nets(out)
    module = Noise2ScoreDenoiser([nets["gamma50"], nets["gauss25"]])
    noisy = torch.rand(2, 1, 16, 16)
    assert call_module(module, noisy, Noise("gamma", 50.0)).shape == noisy.shape
