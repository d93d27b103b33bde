"""Denoising metrics and the result document (shared/PROTOCOLS.md, "Denoising" and "Result keys").

- PSNR = −10·log10(mean((clamp(x̂, 0, 1) − x)²)) over all pixels and channels, peak 1, no
  quantization, per image, then the mean over images.
- SSIM: scikit-image's ``structural_similarity`` with ``data_range=1`` and its defaults (7×7
  uniform window, sample covariance); grayscale on the image, colour the mean over channels. The
  protocol does not say whether the estimate is clamped first: it is, as for PSNR (recorded in
  the result's env as ``ssim_definition``).
- Intervals: a percentile bootstrap over images (2,000 resamples, fixed seed).
"""
from __future__ import annotations

import math
import platform

import numpy as np

from runner.spec import make_result, validate_result

from .noise import Noise, inputs_sha256

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
PSNR_DEFINITION = "-10*log10(mean((clamp(estimate,0,1)-clean)^2)) per image over all pixels and channels, " \
                  "peak 1, no quantization; mean over images"
SSIM_DEFINITION = "skimage.metrics.structural_similarity(clamp(estimate,0,1), clean, data_range=1), " \
                  "defaults (7x7 uniform window, sample covariance); colour: mean over channels; " \
                  "mean over images"


class PerfectEstimate(ValueError):
    """An estimate identical to the clean image: its PSNR is infinite, so it cannot be averaged."""


def _as_hwc(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    return image[:, :, None] if image.ndim == 2 else image


def psnr(estimate: np.ndarray, clean: np.ndarray) -> float:
    estimate, clean = _as_hwc(estimate), _as_hwc(clean)
    if estimate.shape != clean.shape:
        raise ValueError(f"estimate shape {estimate.shape} differs from the image's {clean.shape}")
    mse = float(np.mean((np.clip(estimate, 0.0, 1.0) - clean) ** 2))
    return math.inf if mse == 0.0 else -10.0 * math.log10(mse)


def ssim(estimate: np.ndarray, clean: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    estimate, clean = _as_hwc(estimate), _as_hwc(clean)
    if estimate.shape != clean.shape:
        raise ValueError(f"estimate shape {estimate.shape} differs from the image's {clean.shape}")
    estimate = np.clip(estimate, 0.0, 1.0)
    return float(np.mean([structural_similarity(estimate[:, :, c], clean[:, :, c], data_range=1.0)
                          for c in range(clean.shape[2])]))


def bootstrap_ci95(values: list[float], *, resamples: int = BOOTSTRAP_RESAMPLES,
                   seed: int = BOOTSTRAP_SEED) -> list[float]:
    """95% percentile interval of the mean of ``values``, resampling items with replacement."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("no values to bootstrap")
    rng = np.random.Generator(np.random.PCG64(seed))
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return [float(low), float(high)]


def score_estimates(
    task_slug: str,
    clean: dict[str, np.ndarray],
    estimates: dict[str, np.ndarray],
    *,
    synthetic: bool,
    noisy: dict[str, np.ndarray] | None = None,
    noise: Noise | None = None,
    denoise_seconds: float | None = None,
    wall_s: float | None = None,
    env: dict | None = None,
) -> dict:
    """The result document of one denoising task, validated against runner.spec.

    ``clean`` and ``estimates`` are keyed by image stem (``H×W×C`` arrays; an estimate may also
    come as ``H×W`` for a grayscale image). ``synthetic`` must be True for fake data.
    ``denoise_seconds`` is the time the denoiser itself took over all images (warm-up excluded);
    it gives ``timing.seconds_per_megapixel``. ``env`` (dataset provenance, runner, device,
    sandbox ...) is merged into the result's env.
    """
    missing = sorted(set(clean) - set(estimates))
    if missing:
        raise ValueError(f"no estimate for image(s) {', '.join(missing[:5])}")
    noise = noise or Noise.from_task(task_slug)
    stems = sorted(clean)
    per_image = {}
    for stem in stems:
        value = psnr(estimates[stem], clean[stem])
        if not math.isfinite(value):
            raise PerfectEstimate(f"image {stem}: the estimate equals the clean image exactly (PSNR is infinite)")
        per_image[stem] = {"psnr": value, "ssim": ssim(estimates[stem], clean[stem])}
    psnrs = [per_image[s]["psnr"] for s in stems]
    ssims = [per_image[s]["ssim"] for s in stems]
    megapixels = sum(clean[s].shape[0] * clean[s].shape[1] for s in stems) / 1e6
    timing: dict[str, float] = {}
    if wall_s is not None:
        timing["wall_s"] = float(wall_s)
    if denoise_seconds is not None:
        timing["denoise_s"] = float(denoise_seconds)
        timing["seconds_per_megapixel"] = float(denoise_seconds) / megapixels
        timing["items_per_s"] = len(stems) / denoise_seconds if denoise_seconds > 0 else 0.0
    result_env = {
        **noise.as_env(),
        "synthetic_data": bool(synthetic),
        "n_images": len(stems),
        "megapixels": megapixels,
        "psnr_definition": PSNR_DEFINITION,
        "ssim_definition": SSIM_DEFINITION,
        "ci95_method": f"percentile bootstrap over images, {BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}",
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    if noisy is not None:
        result_env["noisy_inputs_sha256"] = inputs_sha256({s: noisy[s] for s in stems})
    result_env.update(env or {})
    result_env["synthetic_data"] = bool(synthetic or result_env.get("synthetic_data", False))
    metrics = {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims))}
    if "seconds_per_megapixel" in timing:  # speed sits beside quality on the board (lower is faster)
        metrics["seconds_per_megapixel"] = timing["seconds_per_megapixel"]
    doc = make_result(
        task_slug,
        metrics,
        ci95={"psnr": bootstrap_ci95(psnrs), "ssim": bootstrap_ci95(ssims)},
        breakdown={"per_image": per_image},
        env=result_env,
        timing=timing,
    )
    return validate_result(doc, task_slug)
