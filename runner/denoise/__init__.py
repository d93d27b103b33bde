"""The denoising layer: test sets, the protocol's noise, metrics, and reference denoisers.

What a track calls, in order (shared/PROTOCOLS.md, "Denoising (Noise2Score protocol)"):

    from runner.denoise import Noise, open_set, make_noisy_inputs, score_estimates
    task = catalogue_task("denoise-skimage-gray-gauss25")
    noise = Noise.from_params(task.params)
    dataset = open_set(task.params["set"], data_root)        # clean images, synthetic flag, digest
    noisy = make_noisy_inputs(task.slug, dataset.images, noise)   # seeded per (task, image)
    ... the submission turns each noisy image into an estimate (modules.call_module) ...
    result = score_estimates(task.slug, dataset.images, estimates, synthetic=dataset.synthetic,
                             noisy=noisy, noise=noise, denoise_seconds=..., env=dataset.env())

Baselines: ``baselines.BASELINES`` (functions ``(noisy H×W×C, Noise) → estimate``),
``baselines.export_baselines(out_dir)`` (TorchScript artifacts), and
``noise2score.train_noise2score(...)`` (training entry point).
"""
from __future__ import annotations

from .datasets import (
    SETS,
    DatasetError,
    DenoiseSet,
    fake,
    load_set,
    open_set,
    prepare,
    training_images,
    verify,
)
from .metrics import bootstrap_ci95, psnr, score_estimates, ssim
from .noise import Noise, add_noise, make_noisy_inputs, noise_seed, noisy_image

__all__ = [
    "SETS", "DatasetError", "DenoiseSet", "Noise", "add_noise", "bootstrap_ci95", "fake", "load_set",
    "make_noisy_inputs", "noise_seed", "noisy_image", "open_set", "prepare", "psnr", "score_estimates",
    "ssim", "training_images", "verify",
]
