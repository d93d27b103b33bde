"""The denoising layer: the protocol's noise, metrics, and reference denoisers. The test sets are
datasets like any other (runner/datasets/denoise.py).

What a track calls, in order (shared/PROTOCOLS.md, "Denoising (Noise2Score protocol)"):

    from runner.datasets.denoise import open_set
    from runner.denoise import Noise, make_noisy_inputs, score_estimates
    task = catalogue_task("denoise-skimage-gray-gauss25")
    noise = Noise.from_params(task.params)
    dataset = open_set(task.params["set"], data_root)        # clean images, synthetic flag, digest
    noisy = make_noisy_inputs(task.slug, dataset.images, noise)   # seeded per (task, image)
    ... the submission turns each noisy image into an estimate (modules.call_module) ...
    result = score_estimates(task.slug, dataset.images, estimates, synthetic=dataset.synthetic,
                             noisy=noisy, noise=noise, denoise_seconds=..., env=dataset.env)

Baselines: ``baselines.BASELINES`` (functions ``(noisy H×W×C, Noise) → estimate``),
``baselines.export_baselines(out_dir)`` (TorchScript artifacts), and
``noise2score.train_noise2score(...)`` (training entry point).
"""
from __future__ import annotations

from .metrics import bootstrap_ci95, psnr, score_estimates, ssim
from .noise import Noise, add_noise, make_noisy_inputs, noise_seed, noisy_image

__all__ = [
    "Noise", "add_noise", "bootstrap_ci95", "make_noisy_inputs", "noise_seed", "noisy_image", "psnr",
    "score_estimates", "ssim",
]
