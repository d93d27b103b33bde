"""`runner bench`: how close the runner's evaluation comes to the model's own speed.

For a classifier task, on one device, in one run:

1. pure forward — the model loaded in this process (trusted: bench only your own files) and
   timed on a random batch already on the device, warm-up excluded, the device synchronized around
   the timer;
2. trusted evaluation — the track's loop (reader, prefetch thread, output checks, top-5, each
   image's loss and EL2N) with the model in this process;
3. sandboxed evaluation — the same loop through the sandboxed model server, as site jobs run;
4. trusted evaluation without the per-image outcomes, to price them.

Evaluation timings start at the first answered batch (warm-up, model loading and the first
decode excluded) and count the items answered after it. The five measurements run in interleaved
rounds (``repeats``, default 3) and each figure is the best of its rounds. The ratios printed are
``evaluation ÷ pure forward`` (the runner's overhead over the model itself),
``sandboxed ÷ trusted`` (what isolation costs) and ``per_image_cost``, the trusted evaluation's
time with the per-image outcomes ÷ without (issue 17's goal: at most 1.05). Small fake datasets
are cycled to fill the batches asked for.

For a denoising task the same three figures are taken over the task's noisy images, one image a
call as the track sends them: pure forward is the model called on each image in turn (inputs
prepared beforehand, nothing checked), the evaluations are the track's own loop
(runner.tracks.denoise.denoise_with_server: output checks included) in this process and through
the sandboxed model server. "Items" are images.

For optimizer training tasks (opt-digits, opt-cifar*-resnet18) it calls
``runner.tracks.train.bench_training`` when that track is installed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from runner.catalogue import UnknownTask, catalogue_task
from runner.datasets import open_task
from runner.evaluate import file_sha256
from runner.metrics.per_image import PartOutcomes
from runner.progress import ProgressLine
from runner.sandboxed import model_server
from runner.serve import ModelServer, ServerSettings, StreamStats, as_inputs, default_threads, prefetch
from runner.spec import ErrorKind, EvaluationError
from runner.tracks.classify import TopK, default_batch_size, input_shape, stream_batches
from runner.tracks.common import builtin_or_model_file


class InProcessModel:
    """The trusted counterpart of ModelServer: the same model code, in this process, one batch
    after the other (with the same prefetch thread in front)."""

    def __init__(self, model: Any):
        self.model = model

    def stream(
        self,
        batches: Iterable[tuple[Any, Any]],
        on_output: Callable[[Any, int, int, np.ndarray], None],
        *,
        max_items: int,
        deadline: float | None = None,
        cancel: threading.Event | None = None,
    ) -> StreamStats:
        stats = StreamStats(max_items=max_items)
        for inputs, tag in batches:
            values = as_inputs(inputs)
            n = len(values[0])
            for lo in range(0, n, max_items):
                hi = min(n, lo + max_items)
                started = time.perf_counter()
                outputs = self.model.predict([v[lo:hi] for v in values], [None] * len(values))
                compute_s = time.perf_counter() - started
                on_output(tag, lo, hi, outputs)
                stats.record(hi - lo, compute_s)
        return stats


def model_file_to_bench(artifact: Path, kind: str) -> str:
    """The format of the model file to time (runner.tracks.common.builtin_or_model_file). Raises
    EvaluationError INVALID_ARTIFACT for a file that is no model, a builtin baseline included: a
    builtin runs in the runner's own process, with no model to time against."""
    fmt, builtin = builtin_or_model_file(artifact, kind)
    if builtin is not None:
        raise EvaluationError(
            ErrorKind.INVALID_ARTIFACT,
            f"{artifact} names the builtin baseline {builtin!r}; runner bench times model files",
        )
    return fmt


def steady_rate(stats: StreamStats) -> float:
    """Items per second after the first answered batch."""
    if stats.first_output_at is None or stats.last_output_at is None or stats.items_after_first == 0:
        return float("nan")
    return stats.items_after_first / max(stats.last_output_at - stats.first_output_at, 1e-9)


def _timed_loop(
    predictor: Any, slug: str, reader: Any, *, batch_size: int, device: str, batches: int, per_image: bool = True
) -> StreamStats:
    # As the track collects: the top-5 and each image's loss and EL2N (runner/metrics/per_image.py);
    # ``per_image=False`` leaves the latter out, to price them.
    outcomes = PartOutcomes(slug, reader.targets, len(reader)) if per_image else None
    collect = TopK(slug, len(reader), outcomes=outcomes)
    stop = threading.Event()
    try:
        return predictor.stream(
            prefetch(
                stream_batches(reader, batch_size, device=device, limit=batches + 1, repeat=True), stop=stop
            ),
            collect,
            max_items=batch_size,
        )
    finally:
        stop.set()


def bench_classifier(
    task: str,
    artifact: Path,
    *,
    device: str,
    data_root: Path,
    batches: int = 20,
    batch_size: int | None = None,
    precision: str = "fp32",
    trust: bool = False,
    repeats: int = 3,
    progress: ProgressLine | None = None,
) -> dict[str, Any]:
    """The classifier figures above for ``task`` and the model file ``artifact``: ``*_items_per_s``
    (images per second, best of ``repeats`` rounds of ``batches`` batches of ``batch_size``) and
    their ratios, with the device, precision, batch size and sandbox they were taken with. Raises
    EvaluationError (INVALID_ARTIFACT, DATASET_MISSING, SANDBOX_UNAVAILABLE, ...)."""
    say = progress or (lambda message: None)
    fmt = model_file_to_bench(artifact, "classifier")
    data = open_task(task, data_root)
    reader = data.main
    size = batch_size or default_batch_size(task, device)
    threads = default_threads(device)
    shape = [size, *input_shape(task)]

    model = model_server.load_model(str(artifact), fmt, device, threads=threads)
    info = model.configure(precision, "auto")
    model.predict([np.random.default_rng(0).random(shape, dtype=np.float32)], [None])  # settles channels_last
    settings = ServerSettings(
        sha256=file_sha256(artifact),
        fmt=fmt,
        device=device,
        precision=precision,
        trust=trust,
        threads=threads,
    )
    server = ModelServer(artifact, settings)
    best = {"forward": 0.0, "forward_in_sandbox": 0.0, "trusted": 0.0, "sandboxed": 0.0, "no_per_image": 0.0}
    try:
        server_info = server.start()
        # Rounds of all four measurements, interleaved, each figure the best of its rounds: a busy
        # machine slows some runs down, never speeds one up.
        for round_ in range(1, max(1, repeats) + 1):
            say(f"round {round_}/{repeats}: pure forward (trusted, in this process)")
            rate = model.benchmark([shape], iters=max(3, batches), warmup=3)["items_per_s"]
            best["forward"] = max(best["forward"], rate)
            say(f"round {round_}/{repeats}: evaluation, trusted (in this process)")
            stats = _timed_loop(
                InProcessModel(model), task, reader, batch_size=size, device=device, batches=batches
            )
            best["trusted"] = max(best["trusted"], steady_rate(stats))
            say(f"round {round_}/{repeats}: evaluation, trusted, without per-image outcomes")
            stats = _timed_loop(
                InProcessModel(model), task, reader, batch_size=size, device=device, batches=batches,
                per_image=False,
            )
            best["no_per_image"] = max(best["no_per_image"], steady_rate(stats))
            say(f"round {round_}/{repeats}: evaluation, sandboxed (model server)")
            stats = _timed_loop(server, task, reader, batch_size=size, device=device, batches=batches)
            best["sandboxed"] = max(best["sandboxed"], steady_rate(stats))
            say(f"round {round_}/{repeats}: pure forward (in the sandbox)")
            rate = server.forward_items_per_s([shape], iters=max(3, batches), warmup=3)
            best["forward_in_sandbox"] = max(best["forward_in_sandbox"], rate)
    finally:
        server.close()
    forward, trusted, sandboxed = best["forward"], best["trusted"], best["sandboxed"]
    forward_in_sandbox = best["forward_in_sandbox"]
    return {
        "task": task,
        "artifact": str(artifact),
        "format": fmt,
        "device": device,
        "device_name": info.get("device_name"),
        "precision": info.get("precision"),
        "memory_format": info.get("memory_format"),
        "batch_size": size,
        "batches": batches,
        "repeats": repeats,
        "threads": threads,
        "synthetic_data": data.synthetic,
        "items_in_dataset": len(reader),
        "sandbox": server_info.get("sandbox"),
        "forward_items_per_s": forward,
        "forward_in_sandbox_items_per_s": forward_in_sandbox,
        "trusted_eval_items_per_s": trusted,
        "sandboxed_eval_items_per_s": sandboxed,
        "eval_over_forward": sandboxed / forward,
        "sandboxed_over_trusted": sandboxed / trusted,
        "trusted_eval_without_per_image_items_per_s": best["no_per_image"],
        "per_image_cost": best["no_per_image"] / trusted,
    }


def bench_denoiser(
    task: str,
    artifact: Path,
    *,
    device: str,
    data_root: Path,
    precision: str = "fp32",
    trust: bool = False,
    repeats: int = 3,
    progress: ProgressLine | None = None,
) -> dict[str, Any]:
    """The denoising figures above for ``task`` and the model file ``artifact``: images per second,
    one image a call, best of ``repeats`` rounds over the set's images after the first (no forward
    in the sandbox: None). Raises ValueError for a set of fewer than two images, EvaluationError
    (INVALID_ARTIFACT, DATASET_MISSING, SANDBOX_UNAVAILABLE, ...)."""
    from runner.datasets.denoise import open_set
    from runner.denoise import Noise, make_noisy_inputs
    from runner.tracks.denoise import denoise_with_server, wants_noise_level

    say = progress or (lambda message: None)
    fmt = model_file_to_bench(artifact, "denoiser")
    params = catalogue_task(task).params
    noise = Noise.from_params(params)
    dataset = open_set(str(params["set"]), data_root)
    noisy = make_noisy_inputs(task, dataset.images, noise)
    if len(noisy) < 2:
        raise ValueError(f"{task}: the bench times the images after the first; this set has {len(noisy)}")
    threads = default_threads(device)
    model = model_server.load_model(str(artifact), fmt, device, threads=threads)
    info = model.configure(precision, "auto")
    with_noise = wants_noise_level(info, fmt)
    level = np.array([[float(noise.code), float(noise.level)]], dtype=np.float32)
    staged = [[np.ascontiguousarray(im.transpose(2, 0, 1)[None])] + ([level] if with_noise else [])
              for im in noisy.values()]
    model.predict(staged[0], [None] * len(staged[0]))  # warm-up (and the channels_last check)
    server = ModelServer(artifact, ServerSettings(sha256=file_sha256(artifact), fmt=fmt, device=device,
                                                  precision=precision, trust=trust, threads=threads))
    best = {"forward": 0.0, "trusted": 0.0, "sandboxed": 0.0}

    def evaluation(predictor: Any) -> float:
        _, stats = denoise_with_server(predictor, noisy, noise, with_noise=with_noise, deadline=None, cancel=None,
                                       on_image=lambda stem: None)
        return steady_rate(stats)

    try:
        server_info = server.start()
        evaluation(server)  # warm-up of the server's first images
        for round_ in range(1, max(1, repeats) + 1):
            say(f"round {round_}/{repeats}: pure forward (trusted, in this process)")
            began = time.perf_counter()
            for inputs in staged[1:]:
                model.predict(inputs, [None] * len(inputs))
            best["forward"] = max(best["forward"], (len(staged) - 1) / max(time.perf_counter() - began, 1e-9))
            say(f"round {round_}/{repeats}: evaluation, trusted (in this process)")
            best["trusted"] = max(best["trusted"], evaluation(InProcessModel(model)))
            say(f"round {round_}/{repeats}: evaluation, sandboxed (model server)")
            best["sandboxed"] = max(best["sandboxed"], evaluation(server))
    finally:
        server.close()
    return {
        "task": task, "artifact": str(artifact), "format": fmt, "device": device,
        "device_name": info.get("device_name"), "precision": info.get("precision"),
        "memory_format": info.get("memory_format"), "batch_size": 1, "batches": len(staged) - 1,
        "repeats": repeats, "threads": threads, "synthetic_data": dataset.synthetic,
        "items_in_dataset": len(staged), "noise_level_input": with_noise, "sandbox": server_info.get("sandbox"),
        "forward_items_per_s": best["forward"], "forward_in_sandbox_items_per_s": None,
        "trusted_eval_items_per_s": best["trusted"], "sandboxed_eval_items_per_s": best["sandboxed"],
        "eval_over_forward": best["sandboxed"] / best["forward"],
        "sandboxed_over_trusted": best["sandboxed"] / best["trusted"],
    }


def bench(
    task: str,
    artifact: Path | None,
    *,
    device: str,
    data_root: Path,
    batches: int = 20,
    batch_size: int | None = None,
    precision: str = "fp32",
    trust: bool = False,
    seconds: float = 30.0,
    repeats: int = 3,
    progress: ProgressLine | None = None,
) -> dict[str, Any]:
    """Benchmark one task: classifier and denoising tasks as above, optimizer training tasks
    through the training track's own bench (which task runs on which track: runner.catalogue).
    Returns the figures above (rates in items per second). Raises ValueError without the artifact
    a model task needs, EvaluationError RUNNER_ERROR for a task with no benchmark (synthetic
    optimizer tasks, unknown slugs)."""
    try:
        track = catalogue_task(task).track
    except UnknownTask:
        track = None
    if track == "classify":
        if artifact is None:
            raise ValueError("--artifact is required for a classifier task")
        return bench_classifier(
            task,
            artifact,
            device=device,
            data_root=data_root,
            batches=batches,
            batch_size=batch_size,
            precision=precision,
            trust=trust,
            repeats=repeats,
            progress=progress,
        )
    if track == "denoise":
        if artifact is None:
            raise ValueError("--artifact is required for a denoising task")
        return bench_denoiser(task, artifact, device=device, data_root=data_root, precision=precision,
                              trust=trust, repeats=repeats, progress=progress)
    if track == "train":
        from runner.tracks.train import bench_training

        return {"task": task, **bench_training(task, device=device, data_root=data_root, seconds=seconds)}
    raise EvaluationError(ErrorKind.RUNNER_ERROR, f"no benchmark for task {task!r} on this runner")
