"""Classifier track: every classifier task of the catalogue (digits, cifar10, cifar10-c, cifar100,
cifar100-c, imagenet-val, imagenet-a, imagenet-r, imagenet-c, geode, dollarstreet).

1. Sniff the artifact by content (TorchScript, ExportedProgram, ONNX; pickles refused with advice)
   and read the submission's settings from its hparams (below).
2. Open the task's readers (runner.datasets.open_task); labels stay in this process.
3. Borrow the sandboxed model server (runner/serve/): the warm one of this submission when the
   worker process has it, else a new one that loads the model once.
4. Stream every part's batches through it — a prefetch thread prepares the next batch while the
   child computes — check each output (shape [N, C], floats, finite: runner.metrics.classification.compact) and
   keep the top-5 per item; progress after every batch, cancellation between and during batches.
5. Score with runner.metrics.results.score and record format, precision, device, sandbox and timing.

Submission hyperparameters (a JSON object; every key optional):
  precision       "fp32" (default, full precision; TF32 off on GPUs) or "bf16" (autocast)
  channels_last   "auto" (default: on a GPU when the model has 4-D weights and gives the same
                  outputs), "on" or "off"
  clean_top1      the submission's imagenet-val top-1 (%), for imagenet-c's relative_mce
The site may also pass ``clean_top1`` in the task's params (it wins over hparams), and
``batch_size`` (the platform's choice, never the submission's).
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from runner import contract_checks, thumbnails
from runner.catalogue import catalogue_task
from runner.datasets import CLASSIFIER_TASKS, Reader, TaskData, open_task
from runner.datasets.readers import ImageFileReader
from runner.metrics import classification, per_image, results
from runner.progress import Progress
from runner.saliency_sample import explain_task as explain_saliency
from runner.serve import POOL, ServerSettings, prefetch
from runner.spec import ErrorKind, EvaluationError, JobSpec
from runner.tracks.common import builtin_or_model_file, load_seconds, model_options, server_env
from runner.tracks.footprint import footprint


def input_shape(slug: str) -> tuple[int, int, int]:
    """(C, H, W) of the task's model input (the catalogue's). Raises UnknownTask (a LookupError)
    for a task the catalogue lacks, ValueError for one whose input has no fixed shape."""
    shape = catalogue_task(slug).input_shape
    if shape is None:
        raise ValueError(f"{slug} has no fixed model input shape")
    return shape


def default_batch_size(slug: str, device: str) -> int:
    small = input_shape(slug)[1] <= 32
    if device.startswith("cuda"):
        return 1024 if small else 256
    return 256 if small else 32


def decode_workers(reader: Reader, batch_size: int) -> int:
    """Threads decoding image files (runner.datasets.images): none for a single batch (nothing to
    overlap), else RUNNER_DECODE_WORKERS or half the cores (at most 8); the other half runs the
    model. Threads, never processes: this runs inside `runner work`'s daemonic Celery child."""
    if not isinstance(reader, ImageFileReader) or len(reader) <= batch_size:
        return 0
    configured = os.environ.get("RUNNER_DECODE_WORKERS")
    if configured and configured.isdigit():
        return int(configured)
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def reader_device(reader: Reader, device: str) -> str:
    """Image files are decoded on the GPU (nvJPEG) when there is one; arrays are sliced on the CPU
    and go to the server's shared memory as they are."""
    return device if isinstance(reader, ImageFileReader) and device.startswith("cuda") else "cpu"


# --------------------------------------------------------------------------------------------
# Settings.
# --------------------------------------------------------------------------------------------
def submission_options(spec: JobSpec) -> dict[str, Any]:
    """precision, channels_last and clean_top1 from the hparams (BAD_HPARAMS when they do not fit)."""
    options = model_options(spec, "classifier")
    hparams = spec.submission.hparams or {}
    clean = spec.task.params.get("clean_top1", hparams.get("clean_top1"))
    if clean is not None:
        if (
            isinstance(clean, bool)
            or not isinstance(clean, (int, float))
            or not math.isfinite(clean)
            or not 0 <= clean <= 100
        ):
            raise EvaluationError(
                ErrorKind.BAD_HPARAMS, f"clean_top1 {clean!r} must be a top-1 accuracy in percent"
            )
        clean = float(clean)
    return {**options, "clean_top1": clean}


# --------------------------------------------------------------------------------------------
# Predicting a reader.
# --------------------------------------------------------------------------------------------
def stream_batches(
    reader: Reader, batch_size: int, *, device: str, limit: int | None = None, repeat: bool = False
) -> Iterator[tuple[Any, Any]]:
    """What a model server streams (``ModelServer.stream``): ``(inputs, batch)`` pairs of the
    reader in its order, ``inputs`` float32 ``[N, C, H, W]`` in [0, 1] with N ≤ ``batch_size``
    (numpy, or a torch tensor on ``device`` for image files), ``batch`` the reader's Batch (its
    positions tag the outputs); ``limit`` batches at most, cycling the reader when ``repeat`` (for
    benchmarks on small copies)."""
    count = 0
    while True:
        for batch in reader.batches(
            batch_size, workers=decode_workers(reader, batch_size), device=reader_device(reader, device)
        ):
            yield batch.inputs, batch
            count += 1
            if limit is not None and count >= limit:
                return
        if not repeat or count == 0:
            return


class TopK:
    """Collects each item's checked top-5 in reader order and, given ``outcomes`` (a
    runner.metrics.per_image.PartOutcomes of the same reader), its per-image loss and EL2N from
    the same logits."""

    def __init__(self, slug: str, size: int, on_items: Callable[[int], None] | None = None,
                 outcomes: per_image.PartOutcomes | None = None):
        self.slug = slug
        width = min(classification.TOPK, classification.task_classes(slug))
        self.top = np.full((size, width), -1, dtype=np.int32)
        self.filled = np.zeros(size, dtype=bool)
        self.on_items = on_items
        self.outcomes = outcomes

    def __call__(self, batch: Any, lo: int, hi: int, outputs: np.ndarray) -> None:
        if hasattr(outputs, "detach"):  # a torch tensor, possibly on the GPU: copied to the host once
            outputs = outputs.detach().float().cpu().numpy()
        top = classification.compact(self.slug, outputs, hi - lo)
        index = batch.index[lo:hi]
        self.top[index] = top
        self.filled[index] = True
        if self.outcomes is not None:  # after compact: the outputs are checked [n, classes] floats
            self.outcomes.add(index, outputs)
        if self.on_items is not None:
            self.on_items(hi - lo)


def predict_reader(
    server: Any,
    slug: str,
    reader: Reader,
    *,
    batch_size: int,
    device: str,
    deadline: float | None = None,
    cancel: threading.Event | None = None,
    on_items: Callable[[int], None] | None = None,
    outcomes: per_image.PartOutcomes | None = None,
) -> tuple[np.ndarray, Any]:
    """The top-5 of every item of ``reader`` through ``server`` (a ModelServer or anything with its
    ``stream``), and the stream's statistics; ``outcomes`` collects the per-image loss and EL2N."""
    collect = TopK(slug, len(reader), on_items, outcomes)
    stop = threading.Event()
    try:
        stats = server.stream(
            prefetch(stream_batches(reader, batch_size, device=device), stop=stop),
            collect,
            max_items=batch_size,
            deadline=deadline,
            cancel=cancel,
        )
    finally:
        stop.set()
    if not collect.filled.all():
        missing = int((~collect.filled).sum())
        raise EvaluationError(
            ErrorKind.RUNNER_ERROR, f"{slug}: {missing} of {len(reader)} items got no prediction"
        )
    return collect.top, stats


# --------------------------------------------------------------------------------------------
# The submission contract (runner/contract_checks.py, docs/submissions.md).
# --------------------------------------------------------------------------------------------
def first_images(data: TaskData, count: int) -> np.ndarray:
    """float32 ``[m, C, H, W]``: up to ``count`` images from the start of the task's first part."""
    reader = next(iter(data.parts.values()))
    batches = reader.batches(count, device="cpu")
    try:
        inputs = next(batches).inputs
    finally:
        batches.close()
    if hasattr(inputs, "detach"):
        inputs = inputs.detach().cpu().numpy()
    return np.asarray(inputs, dtype=np.float32)[:count]


def check_contract(
    server: Any,
    fmt: str,
    slug: str,
    data: TaskData,
    *,
    precision: str,
    deadline: float | None = None,
    cancel: threading.Event | None = None,
) -> contract_checks.ProbeReport:
    """Before the task's data runs: the input shape the artifact fixes against the task's
    (INVALID_ARTIFACT), then a few of the task's images through the model: logits [N, C], finite,
    the same twice, the same alone as among other images (WRONG_OUTPUT / NOT_FINITE)."""
    channels, height, width = input_shape(slug)
    contract_checks.check_input_shape(server.info, fmt, task=slug, channels=channels, sizes=[(height, width)])
    return contract_checks.probe_classifier(
        server,
        first_images(data, contract_checks.PROBE_ITEMS),
        check_outputs=lambda outputs, n: classification.compact(slug, outputs, n),
        tol=contract_checks.tolerance(server.info, precision),
        deadline=deadline,
        cancel=cancel,
    )


# --------------------------------------------------------------------------------------------
# The track.
# --------------------------------------------------------------------------------------------
def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def evaluate_classifier(
    spec: JobSpec,
    artifact_path: Path,
    *,
    work_dir: Path,
    data_root: Path,
    trust: bool,
    device: str,
    progress: Progress,
    cancel: threading.Event | None = None,
    per_image_out: Path | None = None,
) -> dict[str, Any]:
    """Evaluate the model file at ``artifact_path`` on classifier task ``spec.task.slug``.

    Takes the job spec, the artifact (TorchScript, ExportedProgram or ONNX; its model maps float32
    ``[N, C, H, W]`` in [0, 1] to logits ``[N, classes]``), the data root, whether the sandbox may
    be skipped (``trust``), the device (``"cpu"``, ``"cuda:0"``), ``progress(fraction in [0, 1],
    message)`` and ``cancel`` (set when the site takes the job back). ``work_dir`` is unused: the
    model server keeps its own folder. Returns the result document of runner.metrics.results.score
    (``metrics`` in percent, ``breakdown``, ``env``, ``timing`` in seconds and items per second).
    With ``per_image_out`` it also writes the per-image outcomes there (runner.metrics.per_image)
    and names the file under the document's ``files.per_image`` (name, sha256, n, bytes).
    Raises EvaluationError: INVALID_ARTIFACT, BAD_HPARAMS, WRONG_OUTPUT, NOT_FINITE (the
    submission's fault), TIMEOUT past ``spec.task.time_limit_s``, LEASE_EXPIRED on ``cancel``,
    DATASET_MISSING, OUT_OF_MEMORY, SANDBOX_UNAVAILABLE or RUNNER_ERROR (the node's).
    """
    started = time.perf_counter()
    deadline = time.monotonic() + spec.task.time_limit_s
    slug = spec.task.slug
    if slug not in CLASSIFIER_TASKS:
        raise EvaluationError(ErrorKind.RUNNER_ERROR, f"{slug!r} is not a classifier task")
    # A classifier has no builtin baselines: a file the site calls builtin is refused as invalid.
    fmt, _ = builtin_or_model_file(Path(artifact_path), "classifier", declared=spec.submission.artifact_format)
    options = submission_options(spec)
    data: TaskData = open_task(slug, data_root, spec.task.params)
    batch_size = int(spec.task.params.get("batch_size") or default_batch_size(slug, device))
    settings = ServerSettings(
        sha256=spec.submission.artifact_sha256,
        fmt=fmt,
        device=device,
        precision=options["precision"],
        channels_last=options["channels_last"],
        trust=trust,
        architecture=options["architecture"],  # a .safetensors submission's library architecture
    )
    total = sum(len(r) for r in data.parts.values())
    progress(0.02, "starting the model server")
    with POOL.borrow(
        artifact_path, settings, deadline=deadline, cancel=cancel, min_lifetime_s=spec.task.time_limit_s
    ) as (server, reused):
        progress(0.05, "model loaded" + (" (warm server)" if reused else ""))
        probe = check_contract(server, fmt, slug, data, precision=options["precision"], deadline=deadline,
                               cancel=cancel)
        eval_started = time.perf_counter()
        done = 0

        def advance(items: int) -> None:
            nonlocal done
            done += items
            progress(0.05 + 0.9 * done / max(total, 1), f"{done:,}/{total:,} images")

        predictions: dict[str, np.ndarray] = {}
        collected = {part: per_image.PartOutcomes(slug, reader.targets, len(reader))
                     for part, reader in data.parts.items()} if per_image_out is not None else {}
        compute_s, oom_retries, final_batch = 0.0, 0, batch_size
        for part, reader in data.parts.items():
            top, stats = predict_reader(
                server,
                slug,
                reader,
                batch_size=batch_size,
                device=device,
                deadline=deadline,
                cancel=cancel,
                on_items=advance,
                outcomes=collected.get(part),
            )
            predictions[part] = top
            compute_s += stats.compute_s
            oom_retries += stats.oom_retries
            final_batch = min(final_batch, stats.max_items)
        eval_s = time.perf_counter() - eval_started
        costs = footprint(dict(server.info), device, server.memory_bytes, fmt=fmt,
                          artifact=Path(artifact_path))  # before any other request
        explained = explain_saliency(server, slug, data, per_image.per_image_arrays(
            slug, data, predictions, collected), evaluation_s=time.perf_counter() - started, deadline=deadline,
            cancel=cancel) if per_image_out is not None else None  # issue 17 item 5, bounded; RUNNER_SALIENCY
        info = dict(server.info)
        server_jobs = server.jobs + 1
    progress(0.97, "scoring")
    env = {
        **server_env(info, fmt, device, reused),
        "torch": info.get("torch") or _version("torch"),
        "batch_size": final_batch,
        "oom_retries": oom_retries,
        **costs,  # parameters and the model server's peak memory (issue 19 item 4)
    }
    env["model_server"]["jobs_served"] = server_jobs
    env["contract_checks"] = probe.env()
    if contract_checks.batch_note(info):
        env["model_batch"] = contract_checks.batch_note(info)
    if info.get("note"):
        env["model_note"] = info["note"]
    if slug == "imagenet-c":
        env["clean_top1"] = options["clean_top1"]
        env["clean_top1_source"] = (
            "task params"
            if "clean_top1" in spec.task.params
            else "hparams"
            if options["clean_top1"] is not None
            else "none: relative_mce needs the submission's imagenet-val top1"
        )
    timing = {
        "wall_s": round(time.perf_counter() - started, 4),
        "items_per_s": round(total / max(eval_s, 1e-9), 2),
        "eval_s": round(eval_s, 4),
        "compute_s": round(compute_s, 4),
        "load_s": load_seconds(info, reused),
        "checks_s": round(probe.seconds, 4),
    }
    result = results.score(slug, predictions, data, env=env, timing=timing, clean_top1=options["clean_top1"])
    if per_image_out is not None:
        written = time.perf_counter()
        arrays = per_image.per_image_arrays(slug, data, predictions, collected)
        arrays = thumbnails.with_thumbnails(data, arrays)  # the failure explorer's sample (issue 17 item 4)
        result["files"] = {"per_image": per_image.write_per_image(per_image_out, arrays)}
        result["timing"]["per_image_write_s"] = round(time.perf_counter() - written, 4)
    if explained is not None:
        result["saliency"] = explained
    return result
