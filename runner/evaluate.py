"""The single evaluation path, used by the worker for site jobs and by `runner run` for local dry
runs: pick the task's track, give it a private work folder, check the result against the spec.

One path, and one kind of process. `runner work` evaluates inside a Celery prefork child, which is
daemonic: Python's multiprocessing refuses to start children from it ("daemonic processes are
not allowed to have children"), while `runner run` and the tests evaluate in a plain process that
may. So that a track which starts one fails everywhere, not only on a worker, evaluate() marks
the calling process daemonic for the length of the track (worker_process_rules); the evaluation
code itself uses threads for parallel work (runner/datasets/images.py) and plain subprocesses
for the sandbox, which daemonic processes may start. Running `runner run` itself in a forked
child would buy no more than this and would cost its console output, its Ctrl-C and in-process
tests. tests/e2e/test_cross_path.py runs every kind of task both ways and compares the documents.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import multiprocessing
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from runner.progress import Progress, no_progress
from runner.spec import (
    BUILTIN_BASELINES,
    BUILTIN_FORMAT,
    OPTIMIZER_FORMAT,
    SYNTHETIC_OPTIMIZER_TASKS,
    ErrorKind,
    EvaluationError,
    JobSpec,
    SpecError,
    SubmissionSpec,
    TaskSpec,
    catalogue_benchmark_of,
    catalogue_task,
    read_builtin_baseline,
    sniff_model_format,
    validate_result,
)

# Optimizer training tasks: runner/tracks/train.py (evaluate_training), imported when present.
TRAINING_TASKS = ("opt-digits", "opt-cifar10-resnet18", "opt-cifar100-resnet18")


def _classifier_tasks() -> tuple[str, ...]:
    from runner.datasets import CLASSIFIER_TASKS

    return CLASSIFIER_TASKS


def has_training_track() -> bool:
    try:
        return importlib.util.find_spec("runner.tracks.train") is not None
    except (ImportError, ValueError):
        return False


def _denoise_tasks() -> tuple[str, ...]:
    """The denoising tasks, when this runner has the denoising track's dependencies."""
    try:
        if importlib.util.find_spec("skimage") is None:  # PSNR/SSIM and the bundled sets; bm3d only for BM3D
            return ()
    except (ImportError, ValueError):
        return ()
    from runner.tracks.denoise import denoise_tasks

    return denoise_tasks()


def _track(slug: str) -> Callable[..., dict[str, Any]]:
    if slug in SYNTHETIC_OPTIMIZER_TASKS:
        from runner.tracks.optimize import evaluate_synthetic

        return evaluate_synthetic
    if slug in _classifier_tasks():
        from runner.tracks.classify import evaluate_classifier

        return evaluate_classifier
    if slug in TRAINING_TASKS and has_training_track():
        from runner.tracks.train import evaluate_training

        return evaluate_training
    if slug in _denoise_tasks():
        from runner.tracks.denoise import evaluate_denoiser

        return evaluate_denoiser
    raise EvaluationError(ErrorKind.RUNNER_ERROR, f"this runner cannot evaluate task {slug!r} yet")


def supported_tasks() -> tuple[str, ...]:
    """The tasks this runner has a track for (the datasets may still be missing: see `runner check`)."""
    training = TRAINING_TASKS if has_training_track() else ()
    return (*SYNTHETIC_OPTIMIZER_TASKS, *_classifier_tasks(), *training, *_denoise_tasks())


class _DaemonicWhileEvaluating:
    """Counts the evaluations under way in this process (a test may run two at once); the first
    marks the process daemonic, the last restores it as it was."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.was_daemonic = False

    def enter(self) -> None:
        process = multiprocessing.current_process()
        with self.lock:
            if self.active == 0:
                self.was_daemonic = process.daemon
                if not process.daemon:  # a started process (the Celery child) is daemonic already
                    process.daemon = True
            self.active += 1

    def leave(self) -> None:
        with self.lock:
            self.active -= 1
            if self.active == 0 and not self.was_daemonic:
                multiprocessing.current_process().daemon = False


_DAEMONIC = _DaemonicWhileEvaluating()


@contextlib.contextmanager
def worker_process_rules() -> Iterator[None]:
    """Within the block this process is daemonic, as the Celery prefork child of `runner work` is,
    so starting a multiprocessing child raises AssertionError ("daemonic processes are not
    allowed to have children") here as it would there."""
    _DAEMONIC.enter()
    try:
        yield
    finally:
        _DAEMONIC.leave()


def evaluate(spec: JobSpec, artifact_path: Path | str, *, data_root: Path | str, trust: bool = False,
             device: str = "cpu", progress: Progress | None = None,
             cancel: threading.Event | None = None) -> dict[str, Any]:
    """Evaluate one job and return its result document (validated against runner/spec.py).

    Raises EvaluationError with the kind the site records. ``progress(fraction, message)`` is
    called as the work advances; setting ``cancel`` stops the sandboxed program
    (EvaluationError LEASE_EXPIRED). A failure on a CUDA device that the runner's own check of
    the device then explains is DEVICE_ERROR, whatever the track said (runner/devices.py).
    """
    from runner.devices import blame
    from runner.workdir import locked_folder, work_base

    track = _track(spec.task.slug)
    # Removed afterwards whatever the sandbox left in it (runner/workdir.py).
    with locked_folder(f"runner-job-{spec.job_id}-", work_base()) as work:
        try:
            with worker_process_rules():
                result = track(spec, Path(artifact_path), work_dir=Path(work), data_root=Path(data_root),
                               trust=trust, device=device, progress=progress or no_progress, cancel=cancel)
        except EvaluationError as exc:
            if cancel is not None and cancel.is_set():
                raise
            attributed = blame(exc, device)
            if attributed is exc:
                raise
            raise attributed from exc
    try:
        return validate_result(result, spec.task.slug)
    except SpecError as exc:
        raise EvaluationError(ErrorKind.RUNNER_ERROR, f"the runner produced a result that breaks the spec: {exc}") from exc


def file_sha256(path: Path | str) -> str:
    from runner.datasets.base import file_digest

    return file_digest(Path(path), "sha256")


def local_job_spec(task_slug: str, artifact_path: Path | str, hparams: dict[str, Any] | None = None,
                   *, time_limit_s: int | None = None) -> JobSpec:
    """The job spec the site would send for this task and file, built from the catalogue."""
    try:
        task = catalogue_task(task_slug)
    except KeyError as exc:
        raise ValueError(f"unknown task {task_slug!r}") from exc
    kind = catalogue_benchmark_of(task_slug).kind
    path = Path(artifact_path)
    data = path.read_bytes()
    try:
        if kind == "optimizer":
            fmt = OPTIMIZER_FORMAT
        elif data.lstrip()[:1] == b"{" and kind in BUILTIN_BASELINES:
            read_builtin_baseline(data, kind)
            fmt = BUILTIN_FORMAT
        else:
            fmt = sniff_model_format(data[:4096], data)
    except SpecError as exc:
        raise EvaluationError(ErrorKind.INVALID_ARTIFACT, str(exc)) from exc
    return JobSpec(
        job_id=0, attempt=1,
        task=TaskSpec(slug=task.slug, kind=kind, dataset=task.dataset, params=dict(task.params),
                      time_limit_s=time_limit_s or task.time_limit_s),
        submission=SubmissionSpec(id=0, kind=kind, artifact_format=fmt, artifact_sha256=hashlib.sha256(data).hexdigest(),
                                  artifact_size=len(data), hparams=dict(hparams or {}),
                                  # the site sends builtin artifacts only for maintainers' baselines
                                  is_baseline=fmt == BUILTIN_FORMAT),
    )
