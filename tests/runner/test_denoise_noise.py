"""The protocol's noise: statistics match their definitions, and every run draws the same input."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from runner.denoise.noise import Noise, add_noise, inputs_sha256, make_noisy_inputs, noise_seed, noisy_image

N = 400_000


def _sample(noise: Noise, intensity: float, seed: int = 7) -> np.ndarray:
    clean = np.full(N, intensity, dtype=np.float32)
    return add_noise(clean, noise, np.random.default_rng(seed)).astype(np.float64)


def _assert_mean_and_variance(y: np.ndarray, mean: float, variance: float) -> None:
    # Within 5 standard errors of the mean, and of the variance (≈ var·√(2/N) for these tails).
    assert abs(y.mean() - mean) < 5 * np.sqrt(variance / y.size)
    assert abs(y.var() - variance) < 5 * variance * np.sqrt(3.0 / y.size)


def test_gaussian_noise_adds_zero_mean_with_sigma_over_255_deviation():
    y = _sample(Noise("gaussian", 25.0), 0.4)
    _assert_mean_and_variance(y, 0.4, (25.0 / 255.0) ** 2)
    y50 = _sample(Noise("gaussian", 50.0), 0.4)
    _assert_mean_and_variance(y50, 0.4, (50.0 / 255.0) ** 2)


@pytest.mark.parametrize("zeta", [0.01, 0.05])
def test_poisson_noise_is_zeta_times_a_poisson_count_with_mean_x(zeta):
    x = 0.3
    y = _sample(Noise("poisson", zeta), x)
    _assert_mean_and_variance(y, x, zeta * x)
    counts = y / zeta
    assert np.allclose(counts, np.round(counts), atol=1e-3), "values are whole multiples of ζ"


@pytest.mark.parametrize("k", [100.0, 50.0])
def test_gamma_noise_multiplies_by_a_unit_mean_gamma_with_variance_one_over_k(k):
    x = 0.6
    y = _sample(Noise("gamma", k), x)
    _assert_mean_and_variance(y, x, x * x / k)
    assert (y > 0).all()


def test_noisy_inputs_are_float32_and_not_clipped():
    clean = np.full((64, 64, 1), 0.98, dtype=np.float32)
    y = noisy_image("denoise-skimage-gray-gauss50", "bright", clean, Noise("gaussian", 50.0))
    assert y.dtype == np.float32 and y.shape == clean.shape
    assert y.max() > 1.0


def test_the_same_task_and_image_always_get_the_same_noisy_input():
    clean = np.random.default_rng(0).random((32, 40, 3)).astype(np.float32)
    noise = Noise("poisson", 0.05)
    first = noisy_image("denoise-kodak-poisson0.05", "kodim01", clean, noise)
    again = noisy_image("denoise-kodak-poisson0.05", "kodim01", clean, noise)
    other_image = noisy_image("denoise-kodak-poisson0.05", "kodim02", clean, noise)
    other_task = noisy_image("denoise-cbsd68-poisson0.05", "kodim01", clean, noise)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other_image)
    assert not np.array_equal(first, other_task)


def test_the_seed_is_the_first_eight_bytes_of_sha256_of_task_and_stem():
    expected = int.from_bytes(hashlib.sha256(b"denoise-bsd68-gauss25/test001").digest()[:8], "little")
    assert noise_seed("denoise-bsd68-gauss25", "test001") == expected
    clean = np.full((8, 8, 1), 0.5, dtype=np.float32)
    manual = (clean.astype(np.float64)
              + np.random.Generator(np.random.PCG64(expected)).standard_normal(clean.shape) * 25.0 / 255.0)
    drawn = noisy_image("denoise-bsd68-gauss25", "test001", clean, Noise("gaussian", 25.0))
    assert np.array_equal(drawn, manual.astype(np.float32))


def test_make_noisy_inputs_uses_the_noise_setting_the_catalogue_gives_the_task():
    images = {"a": np.full((16, 16, 1), 0.5, np.float32), "b": np.full((16, 16, 1), 0.2, np.float32)}
    noisy = make_noisy_inputs("denoise-skimage-gray-gamma50", images)
    for stem, clean in images.items():
        assert np.array_equal(noisy[stem], noisy_image("denoise-skimage-gray-gamma50", stem, clean, Noise("gamma", 50.0)))
    assert inputs_sha256(noisy) == inputs_sha256(make_noisy_inputs("denoise-skimage-gray-gamma50", images))


def test_noise_settings_name_themselves_like_the_task_slugs():
    assert [Noise.from_task(f"denoise-set12-{n}").slug for n in
            ("gauss25", "gauss50", "poisson0.01", "poisson0.05", "gamma100", "gamma50")] == [
        "gauss25", "gauss50", "poisson0.01", "poisson0.05", "gamma100", "gamma50"]
    with pytest.raises(ValueError):
        Noise("speckle", 1.0)
