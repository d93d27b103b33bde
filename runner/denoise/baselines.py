"""Reference denoisers for the denoising boards, as plain functions and as submission artifacts.

Every function takes ``(noisy, noise)`` — a float ``H×W×C`` array and the :class:`Noise` setting
— and returns the estimate, ``H×W×C`` float32.

- ``identity``: the noisy input (the floor).
- ``gaussian_filter`` / ``median_filter``: width per noise setting tuned on the training
  photographs (:func:`tune_filters`), never on a test set.
- ``bm3d``: the ``bm3d`` package (Mäkitalo & Foi's BM3D, profile "np"), colour through its
  ``bm3d_rgb``. For non-Gaussian noise through a variance-stabilising transform:
  Poisson → Anscombe 2·√(y/ζ + 3/8) (unit variance), BM3D at σ = 1, closed-form unbiased inverse
  (Mäkitalo & Foi 2011), times ζ; Gamma → log y − (ψ(k) − log k) (unbiased log, variance ψ′(k)),
  BM3D at σ = √ψ′(k), exp back.
- ``noise2score``: the shipped checkpoint's score networks and Tweedie's formula.

Submission artifacts. Identity, the two filters and Noise2Score are also TorchScript modules
(:func:`export_baselines`) that run through the sandbox like any submission, following the
contract in runner/denoise/modules.py (the filters and Noise2Score set
``wants_noise_level = True``). BM3D cannot be TorchScript — it is compiled library code driven
from Python — so it is a *trusted in-process* baseline: the runner calls the function itself,
outside the sandbox, and marks its results ``env.baseline_in_process = True``; nobody can submit
it as an artifact.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .modules import (
    GaussianFilterDenoiser,
    IdentityDenoiser,
    MedianFilterDenoiser,
    call_module,
    gaussian_blur,
    median_blur,
)
from .noise import Noise, add_noise

Denoiser = Callable[[np.ndarray, Noise], np.ndarray]

# Made by tune_filters() with its defaults (the gray training photographs, centre 256×256 crops,
# noise seed 0): the width with the best mean PSNR. Never tuned on a test set.
GAUSSIAN_FILTER_TABLE: list[tuple[str, float, float]] = [
    ("gaussian", 25.0, 1.0), ("gaussian", 50.0, 2.2),
    ("poisson", 0.01, 0.7), ("poisson", 0.05, 1.3),
    ("gamma", 100.0, 0.6), ("gamma", 50.0, 0.7),
]
MEDIAN_FILTER_TABLE: list[tuple[str, float, float]] = [
    ("gaussian", 25.0, 3.0), ("gaussian", 50.0, 9.0),
    ("poisson", 0.01, 3.0), ("poisson", 0.05, 5.0),
    ("gamma", 100.0, 3.0), ("gamma", 50.0, 3.0),
]


def _to_batch(image: np.ndarray) -> torch.Tensor:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]


def _from_batch(batch: torch.Tensor) -> np.ndarray:
    return batch[0].permute(1, 2, 0).contiguous().numpy().astype(np.float32)


def run_module(module: torch.nn.Module, noisy: np.ndarray, noise: Noise) -> np.ndarray:
    """Apply a denoiser module (the artifact contract) to one ``H×W×C`` image."""
    return _from_batch(call_module(module, _to_batch(noisy), noise))


def identity(noisy: np.ndarray, noise: Noise) -> np.ndarray:
    return np.array(noisy, dtype=np.float32, copy=True).reshape(_hwc_shape(noisy))


def _hwc_shape(image: np.ndarray) -> tuple[int, int, int]:
    return (image.shape[0], image.shape[1], 1) if image.ndim == 2 else tuple(image.shape)  # type: ignore[return-value]


def gaussian_filter(noisy: np.ndarray, noise: Noise) -> np.ndarray:
    return run_module(GaussianFilterDenoiser(GAUSSIAN_FILTER_TABLE), noisy, noise)


def median_filter(noisy: np.ndarray, noise: Noise) -> np.ndarray:
    return run_module(MedianFilterDenoiser(MEDIAN_FILTER_TABLE), noisy, noise)


_NOISE2SCORE: dict[str, torch.nn.Module] = {}


def noise2score(noisy: np.ndarray, noise: Noise) -> np.ndarray:
    """Noise2Score with the shipped checkpoint (runner/denoise/checkpoints/)."""
    if "shipped" not in _NOISE2SCORE:
        from .noise2score import load_noise2score

        _NOISE2SCORE["shipped"] = load_noise2score()
    return run_module(_NOISE2SCORE["shipped"], noisy, noise)


# --------------------------------------------------------------------------------------------
# BM3D with variance-stabilising transforms
# --------------------------------------------------------------------------------------------
GAMMA_LOG_FLOOR = 1e-3  # log of a Gamma-noisy pixel; only a clean 0 gives y = 0


def anscombe(counts: np.ndarray) -> np.ndarray:
    return 2.0 * np.sqrt(np.maximum(counts, 0.0) + 3.0 / 8.0)


def inverse_anscombe(d: np.ndarray) -> np.ndarray:
    """Closed-form approximation of the exact unbiased inverse (Mäkitalo & Foi, 2011); the input
    is floored at the transform of 0, where the formula gives ≈ 0."""
    d = np.maximum(d, 2.0 * np.sqrt(3.0 / 8.0))
    r = np.sqrt(1.5)
    return 0.25 * d**2 + 0.25 * r / d - 11.0 / 8.0 / d**2 + 5.0 / 8.0 * r / d**3 - 0.125


def bm3d(noisy: np.ndarray, noise: Noise) -> np.ndarray:
    """BM3D, through a variance-stabilising transform for Poisson and Gamma noise (module doc)."""
    import bm3d as bm3d_lib
    from scipy.special import digamma, polygamma

    y = np.asarray(noisy, dtype=np.float64).reshape(_hwc_shape(noisy))
    if noise.family == "gaussian":
        z, sigma = y, noise.level / 255.0
    elif noise.family == "poisson":
        scale = float(anscombe(np.float64(1.0 / noise.level)))  # the transform of a white pixel
        z, sigma = anscombe(y / noise.level) / scale, 1.0 / scale
    else:
        k = noise.level
        z = np.log(np.maximum(y, GAMMA_LOG_FLOOR)) - (digamma(k) - np.log(k))
        sigma = float(np.sqrt(polygamma(1, k)))
    if z.shape[2] == 1:
        estimate = np.asarray(bm3d_lib.bm3d(z[:, :, 0], sigma_psd=sigma))[:, :, None]
    else:
        estimate = np.asarray(bm3d_lib.bm3d_rgb(z, sigma_psd=sigma))
    if noise.family == "poisson":
        estimate = noise.level * inverse_anscombe(estimate * scale)
    elif noise.family == "gamma":
        estimate = np.exp(estimate)
    return estimate.astype(np.float32)


# --------------------------------------------------------------------------------------------
# The registry, export and a one-call evaluation
# --------------------------------------------------------------------------------------------
def _noise2score_module() -> torch.nn.Module:
    from .noise2score import load_noise2score

    return load_noise2score()


@dataclass(frozen=True)
class Baseline:
    name: str
    title: str
    denoise: Denoiser
    # Builds the TorchScript-able module, or None for a baseline that only runs in-process.
    make_module: Callable[[], torch.nn.Module] | None
    # True: runs inside the runner process, outside the sandbox (trusted code the platform ships).
    trusted_in_process: bool


BASELINES: dict[str, Baseline] = {
    "identity": Baseline("identity", "Noisy input (identity)", identity, IdentityDenoiser, False),
    "gaussian-filter": Baseline("gaussian-filter", "Gaussian filter (width tuned per setting)", gaussian_filter,
                                lambda: GaussianFilterDenoiser(GAUSSIAN_FILTER_TABLE), False),
    "median-filter": Baseline("median-filter", "Median filter (window tuned per setting)", median_filter,
                              lambda: MedianFilterDenoiser(MEDIAN_FILTER_TABLE), False),
    "bm3d": Baseline("bm3d", "BM3D (VST for Poisson and Gamma)", bm3d, None, True),
    "noise2score": Baseline("noise2score", "Noise2Score (shipped CPU checkpoint)", noise2score,
                            _noise2score_module, False),
}


def export_baselines(out_dir: str | Path) -> dict[str, Path]:
    """Save every baseline as a submission artifact plus ``baselines.json`` (title, file, format,
    sha256, wants_noise_level). TorchScript (``<name>.pt``) for those that can be: ordinary denoiser
    submissions that run in the sandbox. A builtin-baseline file (``<name>.json``, runner.spec
    BUILTIN_FORMAT) for BM3D, which the runner runs itself and the site accepts only as a baseline."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    manifest: dict[str, dict] = {}
    for name, baseline in BASELINES.items():
        if baseline.make_module is None:
            path = out / f"{name}.json"
            path.write_text(json.dumps({"builtin_baseline": name}))
            paths[name] = path
            manifest[name] = {"title": baseline.title, "file": path.name, "format": "builtin",
                              "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "wants_noise_level": True,
                              "trusted_in_process": True,
                              "why": "compiled library code driven from Python; cannot be TorchScript, so the "
                                     "runner runs it itself (only for submissions flagged as baselines)"}
            continue
        module = baseline.make_module().eval()
        path = out / f"{name}.pt"
        torch.jit.save(torch.jit.script(module), str(path))
        paths[name] = path
        manifest[name] = {"title": baseline.title, "file": path.name, "format": "torchscript",
                          "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                          "wants_noise_level": bool(getattr(module, "wants_noise_level", False)),
                          "trusted_in_process": False}
    (out / "baselines.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return paths


def run_denoiser(denoise: Denoiser, noisy: dict[str, np.ndarray], noise: Noise, *, warmup: bool = True
                 ) -> tuple[dict[str, np.ndarray], float]:
    """Apply a denoiser function to every image; returns the estimates and the seconds spent.
    A warm-up call on a 32×32 corner of the first image (loading weights, first-call overheads)
    is kept out of the time."""
    if warmup and noisy:
        first = next(iter(noisy.values()))
        denoise(np.ascontiguousarray(first[:32, :32]), noise)
    estimates = {}
    spent = 0.0
    for stem, image in noisy.items():
        began = time.perf_counter()
        estimates[stem] = np.asarray(denoise(image, noise), dtype=np.float32)
        spent += time.perf_counter() - began
    return estimates, spent


def evaluate_baseline(name: str, task_slug: str, *, root: str | Path | None = None,
                      stems: list[str] | None = None, env: dict | None = None) -> dict:
    """Run a registered baseline in-process on a catalogue task; returns the result document."""
    from runner.catalogue import catalogue_task
    from runner.datasets.denoise import open_set

    from .metrics import score_estimates
    from .noise import make_noisy_inputs

    began = time.perf_counter()
    baseline = BASELINES[name]
    task = catalogue_task(task_slug)
    noise = Noise.from_params(task.params)
    dataset = open_set(task.params["set"], root, stems=stems)
    noisy = make_noisy_inputs(task_slug, dataset.images, noise)
    estimates, spent = run_denoiser(baseline.denoise, noisy, noise)
    return score_estimates(
        task_slug, dataset.images, estimates, synthetic=dataset.synthetic, noisy=noisy, noise=noise,
        denoise_seconds=spent, wall_s=time.perf_counter() - began,
        env={**dataset.env, "baseline": name, "baseline_in_process": True,
             "baseline_trusted_in_process": baseline.trusted_in_process, "torch": torch.__version__,
             **(env or {})},
    )


def filter_tuning_images() -> dict[str, np.ndarray]:
    """The gray training photographs (whole pictures, not single colour planes), centre-cropped
    to at most 256×256."""
    from runner.datasets.denoise import training_images


    out = {}
    for stem, image in training_images(channels=1).items():
        if stem.endswith(("_r", "_g", "_b")):
            continue
        top, left = max(0, (image.shape[0] - 256) // 2), max(0, (image.shape[1] - 256) // 2)
        out[stem] = image[top:top + 256, left:left + 256]
    return out


def tune_filters(images: dict[str, np.ndarray] | None = None, settings: tuple[Noise, ...] | None = None, *,
                 seed: int = 0,
                 sigmas: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.3, 1.5, 1.8, 2.2, 2.6, 3.0),
                 sizes: tuple[int, ...] = (3, 5, 7, 9)) -> dict[str, dict[str, float]]:
    """The Gaussian width and median window with the best mean PSNR per setting, on noisy copies
    of ``images`` (default :func:`filter_tuning_images`; settings default to the protocol's six).
    This is how the tables above were made."""
    from .metrics import psnr
    from .noise2score import PROTOCOL_SETTINGS

    images = filter_tuning_images() if images is None else images
    rng = np.random.Generator(np.random.PCG64(seed))
    best: dict[str, dict[str, float]] = {}
    for noise in settings or PROTOCOL_SETTINGS:
        batches = [(clean, _to_batch(add_noise(clean, noise, rng))) for clean in images.values()]
        gauss = {s: np.mean([psnr(_from_batch(gaussian_blur(b, s)), c) for c, b in batches]) for s in sigmas}
        median = {m: np.mean([psnr(_from_batch(median_blur(b, m)), c) for c, b in batches]) for m in sizes}
        best[noise.slug] = {"gaussian_sigma": max(gauss, key=gauss.get),  # type: ignore[arg-type]
                            "median_size": max(median, key=median.get)}  # type: ignore[arg-type]
    return best
