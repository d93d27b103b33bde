"""Denoising track: every ``denoise-*`` task of the catalogue (shared/PROTOCOLS.md, "Denoising").

1. Open the task's clean set (runner.datasets.denoise.open_set; the skimage sets need no data root) and
   draw the protocol's noise, seeded per (task, image), so every submission sees the same input.
2. A model artifact (TorchScript, ExportedProgram, ONNX) runs in the sandboxed model server
   (runner/serve/), one image at a time — the sets mix sizes and orientations — as a float32
   batch ``[1, C, H, W]``. A model that declares ``wants_noise_level`` (TorchScript attribute; two
   graph inputs for .pt2 and ONNX) also gets ``[1, 2]`` = (family code, level). The clean images
   never leave this process.
3. Every output is checked here: the input's shape (``wrong_output``), finite (``not_finite``).
4. A builtin baseline (runner.spec.BUILTIN_FORMAT, only for submissions flagged as baselines)
   runs the registered function in this process: trusted code the runner ships (BM3D).
5. Score (runner.denoise.score_estimates: PSNR and SSIM per image and averaged, bootstrap CIs,
   seconds per megapixel from the denoiser's own compute time) and attach a few
   noisy / denoised / clean crops with their PSNR for the submission page.

Submission hyperparameters (a JSON object; every key optional): ``precision`` "fp32" (default)
or "bf16"; ``channels_last`` "auto" (default), "on" or "off".
"""
from __future__ import annotations

import base64
import importlib.util
import io
import math
import platform
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

import runner
from runner import contract_checks
from runner.catalogue import tasks_of_track
from runner.datasets.denoise import DatasetError, open_set
from runner.denoise import Noise, make_noisy_inputs, score_estimates
from runner.denoise.metrics import PerfectEstimate, psnr
from runner.progress import Progress
from runner.serve import POOL, ServerPool, ServerSettings
from runner.spec import BUILTIN_FORMAT, ErrorKind, EvaluationError, JobSpec
from runner.tracks.common import builtin_or_model_file, load_seconds, model_options, server_env

SAMPLE_COUNT = 2  # images whose crops the result carries
SAMPLE_SIZE = 96  # pixels a side


# --------------------------------------------------------------------------------------------
# Settings.
# --------------------------------------------------------------------------------------------
def wants_noise_level(info: dict[str, Any], fmt: str) -> bool:
    """The contract of runner/denoise/modules.py, read from what the model server reports."""
    if fmt == "torchscript":
        return bool((info.get("attributes") or {}).get("wants_noise_level"))
    return int(info.get("inputs") or 1) == 2


def check_estimate(stem: str, estimate: np.ndarray, shape: tuple[int, ...]) -> None:
    """WRONG_OUTPUT unless ``estimate`` has ``shape`` ([1, C, H, W]) and floats; NOT_FINITE for
    NaN or infinity."""
    if tuple(estimate.shape) != tuple(shape):
        raise EvaluationError(
            ErrorKind.WRONG_OUTPUT,
            f"image {stem}: the denoiser returned shape {list(estimate.shape)}; the contract is the "
            f"input's shape {list(shape)} ([N, C, H, W])")
    if not np.issubdtype(estimate.dtype, np.floating):
        raise EvaluationError(ErrorKind.WRONG_OUTPUT,
                              f"image {stem}: the denoiser returned {estimate.dtype}; return float32 pixels")
    if not np.isfinite(estimate).all():
        raise EvaluationError(ErrorKind.NOT_FINITE, f"image {stem}: the denoiser returned NaN or infinite values")


def _nchw(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Running a model artifact or a builtin baseline.
# --------------------------------------------------------------------------------------------
def denoise_with_server(server: Any, noisy: dict[str, np.ndarray], noise: Noise, *, with_noise: bool,
                        deadline: float | None, cancel: threading.Event | None,
                        on_image: Callable[[str], None]) -> tuple[dict[str, np.ndarray], Any]:
    """Every noisy image through ``server`` (a ModelServer or anything with its ``stream``); returns
    the checked estimates (``H×W×C``) and the stream's statistics."""
    estimates: dict[str, np.ndarray] = {}
    level = np.array([[float(noise.code), float(noise.level)]], dtype=np.float32)

    def batches() -> Iterator[tuple[list[np.ndarray], str]]:
        for stem, image in noisy.items():
            yield ([_nchw(image), level] if with_noise else [_nchw(image)]), stem

    def collect(stem: str, lo: int, hi: int, outputs: np.ndarray) -> None:
        check_estimate(stem, outputs, (1, noisy[stem].shape[2], *noisy[stem].shape[:2]))
        estimates[stem] = np.ascontiguousarray(outputs[0].transpose(1, 2, 0), dtype=np.float32)
        on_image(stem)

    stats = server.stream(batches(), collect, max_items=1, deadline=deadline, cancel=cancel)
    missing = sorted(set(noisy) - set(estimates))
    if missing:
        raise EvaluationError(ErrorKind.RUNNER_ERROR, f"no estimate came back for {', '.join(missing[:5])}")
    return estimates, stats


def check_contract(server: Any, fmt: str, slug: str, noisy: dict[str, np.ndarray], noise: Noise, *,
                   with_noise: bool, precision: str, deadline: float | None = None,
                   cancel: threading.Event | None = None) -> contract_checks.ProbeReport:
    """Before the set runs: the image size and channels the artifact fixes against the set's
    (INVALID_ARTIFACT: a fixed H×W cannot take a set of mixed sizes), then a few noisy crops
    through the model: the input's shape back, finite, the same twice, the same alone as in a
    batch (WRONG_OUTPUT / NOT_FINITE; runner/contract_checks.py)."""
    images = list(noisy.values())
    contract_checks.check_input_shape(server.info, fmt, task=slug, channels=images[0].shape[2],
                                      sizes=[im.shape[:2] for im in images])
    shapes = server.info.get("input_shapes") or [None]
    first = shapes[0] if shapes[0] and len(shapes[0]) == 4 else [None] * 4
    crops = contract_checks.denoiser_crops(images, (first[2], first[3]))
    level = np.array([[float(noise.code), float(noise.level)]], dtype=np.float32) if with_noise else None
    return contract_checks.probe_denoiser(server, crops, level, tol=contract_checks.tolerance(server.info, precision),
                                          deadline=deadline, cancel=cancel)


def denoise_builtin(name: str, noisy: dict[str, np.ndarray], noise: Noise, *, deadline: float | None,
                    cancel: threading.Event | None, on_image: Callable[[str], None]
                    ) -> tuple[dict[str, np.ndarray], float]:
    """A registered trusted baseline in this process, image by image (cancellation and the time
    limit are checked between images); returns the estimates and the seconds it spent."""
    from runner.denoise.baselines import BASELINES

    baseline = BASELINES.get(name)
    if baseline is None or not baseline.trusted_in_process:
        raise EvaluationError(ErrorKind.RUNNER_ERROR, f"this runner has no builtin baseline {name!r} (update it)")
    if name == "bm3d" and importlib.util.find_spec("bm3d") is None:
        raise EvaluationError(ErrorKind.RUNNER_ERROR, "this runner lacks the bm3d package (pip install bm3d)")
    estimates: dict[str, np.ndarray] = {}
    spent = 0.0
    for stem, image in noisy.items():
        if cancel is not None and cancel.is_set():
            raise EvaluationError(ErrorKind.LEASE_EXPIRED, "the site took the job back")
        if deadline is not None and time.monotonic() > deadline:
            raise EvaluationError(ErrorKind.TIMEOUT, f"the builtin {name} ran past the task's time limit")
        began = time.perf_counter()
        estimate = np.asarray(baseline.denoise(image, noise), dtype=np.float32).reshape(image.shape)
        spent += time.perf_counter() - began
        check_estimate(stem, _nchw(estimate), _nchw(image).shape)
        estimates[stem] = estimate
        on_image(stem)
    return estimates, spent


# --------------------------------------------------------------------------------------------
# Crops for the submission page.
# --------------------------------------------------------------------------------------------
def _png_data_uri(pixels: np.ndarray) -> str:
    from PIL import Image

    plane = np.round(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)
    image = Image.fromarray(plane[:, :, 0] if plane.shape[2] == 1 else plane)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def detail_box(clean: np.ndarray, size: int = SAMPLE_SIZE, stride: int = 16) -> tuple[int, int, int]:
    """(top, left, size) of the square with the most detail (largest pixel standard deviation of
    the clean image) on a grid: where a denoiser's faults show."""
    height, width = clean.shape[:2]
    size = min(size, height, width)
    gray = clean.mean(axis=2)
    best, box = -1.0, (0, 0)
    for top in range(0, height - size + 1, stride):
        for left in range(0, width - size + 1, stride):
            spread = float(gray[top:top + size, left:left + size].std())
            if spread > best:
                best, box = spread, (top, left)
    return box[0], box[1], size


def sample_crops(clean: dict[str, np.ndarray], noisy: dict[str, np.ndarray], estimates: dict[str, np.ndarray],
                 count: int = SAMPLE_COUNT) -> list[dict[str, Any]]:
    """Noisy / denoised / clean crops of the first ``count`` images (stem order) as PNG data URIs,
    with the PSNR of each crop and of the whole image."""
    samples = []
    for stem in sorted(clean)[:count]:
        top, left, size = detail_box(clean[stem])
        window = (slice(top, top + size), slice(left, left + size))
        crop = {k: images[stem][window] for k, images in (("clean", clean), ("noisy", noisy), ("denoised", estimates))}
        samples.append({
            "stem": stem,
            "box": [top, left, size],
            "psnr_noisy": _finite_or_none(psnr(crop["noisy"], crop["clean"])),
            "psnr_denoised": _finite_or_none(psnr(crop["denoised"], crop["clean"])),
            "psnr_image": _finite_or_none(psnr(estimates[stem], clean[stem])),
            "png": {k: _png_data_uri(v) for k, v in crop.items()},
        })
    return samples


def _finite_or_none(value: float) -> float | None:
    return round(value, 3) if math.isfinite(value) else None


# --------------------------------------------------------------------------------------------
# The track.
# --------------------------------------------------------------------------------------------
def evaluate_denoiser(
    spec: JobSpec,
    artifact_path: Path,
    *,
    work_dir: Path,
    data_root: Path,
    trust: bool,
    device: str,
    progress: Progress,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    """Evaluate the artifact at ``artifact_path`` on denoising task ``spec.task.slug``.

    Takes the job spec (its params name the set and the noise), the artifact (a model mapping
    float32 ``[1, C, H, W]`` in [0, 1], plus ``[1, 2]`` = (family code, level) if it wants the
    noise level, to an estimate of the input's shape; or a builtin baseline file for a submission
    flagged as a baseline), the data root, whether the sandbox may be skipped (``trust``), the
    device, ``progress(fraction in [0, 1], message)`` and ``cancel`` (set when the site takes the
    job back). ``work_dir`` is unused: the model server keeps its own folder. Returns the result
    document of runner.denoise.score_estimates (PSNR in dB and SSIM, per image and averaged, with
    bootstrap CIs; ``timing`` in seconds and seconds per megapixel), with ``breakdown.samples``
    (crops as PNG data URIs). Raises EvaluationError: INVALID_ARTIFACT, BAD_HPARAMS,
    WRONG_OUTPUT, NOT_FINITE (the submission's fault), TIMEOUT past ``spec.task.time_limit_s``,
    LEASE_EXPIRED on ``cancel``, DATASET_MISSING, OUT_OF_MEMORY, SANDBOX_UNAVAILABLE or
    RUNNER_ERROR (the node's).
    """
    started = time.perf_counter()
    deadline = time.monotonic() + spec.task.time_limit_s
    slug, params = spec.task.slug, spec.task.params
    if slug not in tasks_of_track("denoise"):
        raise EvaluationError(ErrorKind.RUNNER_ERROR, f"{slug!r} is not a denoising task")
    fmt, builtin = builtin_or_model_file(Path(artifact_path), "denoiser", declared=spec.submission.artifact_format)
    if fmt == BUILTIN_FORMAT and not spec.submission.is_baseline:
        # The site accepts builtin files only from its maintainers' seeding: this is its mistake.
        raise EvaluationError(ErrorKind.RUNNER_ERROR,
                              "builtin baselines are the platform's own reference methods and this submission is "
                              "not flagged as one; the runner refuses to run it")
    options = model_options(spec, "denoiser")
    try:
        noise = Noise.from_params(params)
        dataset = open_set(str(params["set"]), data_root)
    except (KeyError, ValueError) as exc:
        raise EvaluationError(ErrorKind.RUNNER_ERROR, f"the task's params do not describe a denoising task: {exc}") from exc
    except DatasetError as exc:
        raise EvaluationError(ErrorKind.DATASET_MISSING, str(exc)) from exc
    progress(0.02, "drawing the noise")
    noisy = make_noisy_inputs(slug, dataset.images, noise)
    total, done = len(noisy), 0

    def advance(stem: str) -> None:
        nonlocal done
        done += 1
        progress(0.05 + 0.85 * done / max(total, 1), f"{done}/{total} images")

    if builtin is not None:
        progress(0.05, f"running the builtin {builtin}")
        estimates, denoise_s = denoise_builtin(builtin, noisy, noise, deadline=deadline, cancel=cancel,
                                               on_image=advance)
        env = {"runner": runner.__version__, "python": platform.python_version(), "format": fmt,
               "device_requested": device, "seeds": [], "builtin_baseline": builtin,
               "sandbox": "none: trusted reference code shipped with the runner", "device": "cpu"}
        load_s = checks_s = 0.0
    else:
        settings = ServerSettings(sha256=spec.submission.artifact_sha256, fmt=fmt, device=device,
                                  precision=options["precision"], channels_last=options["channels_last"],
                                  trust=trust)
        progress(0.03, "starting the model server")
        POOL.close_idle()  # one model per device at a time: a classifier's warm server goes first
        # A fresh model process per job, never a warm one (a pool that keeps no idle server): a
        # module may keep state between calls, and the six tasks of a set show it the same
        # photographs under different noise, which it could average across jobs.
        with ServerPool(idle_s=0).borrow(artifact_path, settings, deadline=deadline, cancel=cancel,
                                         min_lifetime_s=spec.task.time_limit_s) as (server, reused):
            with_noise = wants_noise_level(server.info, fmt)
            progress(0.05, "model loaded")
            probe = check_contract(server, fmt, slug, noisy, noise, with_noise=with_noise,
                                   precision=options["precision"], deadline=deadline, cancel=cancel)
            estimates, stats = denoise_with_server(server, noisy, noise, with_noise=with_noise, deadline=deadline,
                                                   cancel=cancel, on_image=advance)
            info = dict(server.info)
        denoise_s = stats.compute_s
        env = {**server_env(info, fmt, device, reused), "noise_level_input": with_noise,
               "contract_checks": probe.env()}
        if contract_checks.batch_note(info):
            env["model_batch"] = contract_checks.batch_note(info)
        load_s = load_seconds(info, reused)
        checks_s = probe.seconds
    progress(0.92, "scoring")
    try:
        result = score_estimates(slug, dataset.images, estimates, synthetic=dataset.synthetic, noisy=noisy,
                                 noise=noise, denoise_seconds=max(denoise_s, 1e-9),
                                 wall_s=time.perf_counter() - started, env={**dataset.env, **env})
    except PerfectEstimate as exc:  # only a model that knows the clean image can do that
        raise EvaluationError(ErrorKind.WRONG_OUTPUT, str(exc)) from exc
    except ValueError as exc:  # SpecError included: the runner's own fault, never the submission's
        raise EvaluationError(ErrorKind.RUNNER_ERROR, f"scoring failed: {exc}") from exc
    result["timing"]["load_s"] = load_s
    result["timing"]["checks_s"] = round(checks_s, 4)
    result["breakdown"]["samples"] = sample_crops(dataset.images, noisy, estimates)
    return result
