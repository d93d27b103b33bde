"""PSNR and SSIM against independent computations, and the result document a denoising task posts."""
from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from runner.catalogue import required_metrics
from runner.denoise.metrics import bootstrap_ci95, psnr, score_estimates, ssim


def _pair(shape, seed=0):
    rng = np.random.default_rng(seed)
    clean = rng.random(shape)
    # Smooth structure plus noise that pushes some values outside [0, 1].
    estimate = clean + rng.normal(0.0, 0.15, shape)
    return estimate, clean


def _hand_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of two 2-D images in [0, 1] (data range 1): 7×7 uniform windows, sample covariance
    (N/(N−1)), K1 = 0.01, K2 = 0.03, mean over the windows that lie wholly inside the image."""
    n = 49
    wx, wy = sliding_window_view(x, (7, 7)), sliding_window_view(y, (7, 7))
    mx, my = wx.mean(axis=(-1, -2)), wy.mean(axis=(-1, -2))
    vx = ((wx - mx[..., None, None]) ** 2).sum(axis=(-1, -2)) / (n - 1)
    vy = ((wy - my[..., None, None]) ** 2).sum(axis=(-1, -2)) / (n - 1)
    cxy = ((wx - mx[..., None, None]) * (wy - my[..., None, None])).sum(axis=(-1, -2)) / (n - 1)
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def test_psnr_clamps_the_estimate_and_uses_peak_one_over_all_pixels_and_channels():
    estimate, clean = _pair((40, 30, 3))
    expected = -10.0 * np.log10(np.mean((np.minimum(np.maximum(estimate, 0), 1) - clean) ** 2))
    assert psnr(estimate, clean) == pytest.approx(expected, abs=1e-10)
    assert estimate.max() > 1 and estimate.min() < 0, "the fixture must exercise the clamp"


def test_psnr_accepts_a_two_dimensional_estimate_for_a_grayscale_image():
    estimate, clean = _pair((20, 20, 1))
    assert psnr(estimate[:, :, 0], clean) == psnr(estimate, clean)


def test_ssim_of_a_grayscale_image_matches_a_hand_written_7x7_uniform_window_ssim():
    estimate, clean = _pair((48, 52, 1), seed=3)
    expected = _hand_ssim(np.clip(estimate[:, :, 0], 0, 1), clean[:, :, 0])
    assert ssim(estimate, clean) == pytest.approx(expected, abs=1e-9)


def test_ssim_of_a_colour_image_is_the_mean_of_the_per_channel_ssims():
    estimate, clean = _pair((33, 41, 3), seed=4)
    expected = np.mean([_hand_ssim(np.clip(estimate[:, :, c], 0, 1), clean[:, :, c]) for c in range(3)])
    assert ssim(estimate, clean) == pytest.approx(expected, abs=1e-9)


def test_a_perfect_estimate_has_ssim_one():
    _, clean = _pair((30, 30, 1))
    assert ssim(clean, clean) == pytest.approx(1.0)


def test_bootstrap_interval_brackets_the_mean_and_collapses_for_identical_values():
    values = [20.0, 22.5, 25.0, 27.5, 30.0, 31.0]
    low, high = bootstrap_ci95(values)
    assert low < np.mean(values) < high
    assert bootstrap_ci95([28.0, 28.0, 28.0]) == [28.0, 28.0]
    assert bootstrap_ci95(values) == [low, high], "a fixed seed gives the same interval"


def test_score_estimates_writes_the_result_keys_the_boards_read():
    rng = np.random.default_rng(1)
    clean = {s: rng.random((24, 32, 3)).astype(np.float32) for s in ("kodim02", "kodim01")}
    estimates = {s: np.clip(c + rng.normal(0, 0.05, c.shape), 0, 1) for s, c in clean.items()}
    doc = score_estimates("denoise-kodak-gauss25", clean, estimates, synthetic=True, noisy=estimates,
                          denoise_seconds=0.5, wall_s=1.0, env={"runner": "test"})
    assert set(required_metrics("denoise-kodak-gauss25")) <= set(doc["metrics"])
    per_image = doc["breakdown"]["per_image"]
    assert list(per_image) == ["kodim01", "kodim02"]
    assert doc["metrics"]["psnr"] == pytest.approx(np.mean([psnr(estimates[s], clean[s]) for s in clean]))
    assert doc["metrics"]["ssim"] == pytest.approx(np.mean([v["ssim"] for v in per_image.values()]))
    assert set(doc["ci95"]) == {"psnr", "ssim"}
    assert doc["env"]["synthetic_data"] is True
    assert doc["env"]["noise_family"] == "gaussian" and doc["env"]["noise_level"] == 25.0
    assert "sha256" in doc["env"]["seed_scheme"] and len(doc["env"]["noisy_inputs_sha256"]) == 64
    assert doc["timing"]["seconds_per_megapixel"] == pytest.approx(0.5 / (2 * 24 * 32 / 1e6))
    assert doc["metrics"]["seconds_per_megapixel"] == doc["timing"]["seconds_per_megapixel"]


def test_score_estimates_refuses_a_missing_estimate():
    clean = {"a": np.zeros((8, 8, 1), np.float32), "b": np.zeros((8, 8, 1), np.float32)}
    with pytest.raises(ValueError, match="no estimate"):
        score_estimates("denoise-set12-gauss25", clean, {"a": clean["a"] + 0.1}, synthetic=False)
