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
import json
import multiprocessing
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from runner.catalogue import UnknownTask, catalogue_benchmark_of, catalogue_task, tasks_of_track
from runner.progress import Progress, no_progress
from runner.spec import (
    BUILTIN_FORMAT,
    ErrorKind,
    EvaluationError,
    JobSpec,
    SpecError,
    SubmissionSpec,
    TaskSpec,
    validate_result,
)


def _denoising_available() -> bool:
    """Whether this runner has the denoising track's dependencies (scikit-image: PSNR/SSIM and the
    bundled sets; bm3d is needed only for the BM3D baseline)."""
    try:
        return importlib.util.find_spec("skimage") is not None
    except (ImportError, ValueError):
        return False


def _tracks() -> tuple[str, ...]:
    """The catalogue's tracks this runner can run, in the order it lists their tasks."""
    return ("synthetic", "classify", "train", *(("denoise",) if _denoising_available() else ()))


def _track(slug: str) -> Callable[..., dict[str, Any]]:
    """The entry point of the track that evaluates task ``slug`` (by the catalogue). Raises
    EvaluationError RUNNER_ERROR for a task the catalogue lacks or this runner cannot run."""
    try:
        track = catalogue_task(slug).track
    except UnknownTask:
        track = None
    if track not in _tracks():
        raise EvaluationError(ErrorKind.RUNNER_ERROR, f"this runner cannot evaluate task {slug!r} yet")
    if track == "synthetic":
        from runner.tracks.optimize import evaluate_synthetic

        return evaluate_synthetic
    if track == "classify":
        from runner.tracks.classify import evaluate_classifier

        return evaluate_classifier
    if track == "train":
        from runner.tracks.train import evaluate_training

        return evaluate_training
    from runner.tracks.denoise import evaluate_denoiser

    return evaluate_denoiser


def supported_tasks() -> tuple[str, ...]:
    """The tasks this runner has a track for (the datasets may still be missing: see `runner check`),
    grouped by track: synthetic, classify, train, then denoise when scikit-image is installed."""
    return tuple(slug for track in _tracks() for slug in tasks_of_track(track))


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
             cancel: threading.Event | None = None, per_image_out: Path | None = None) -> dict[str, Any]:
    """Evaluate one job and return its result document (validated against runner/spec.py).

    Raises EvaluationError with the kind the site records. ``progress(fraction, message)`` is
    called as the work advances; setting ``cancel`` stops the sandboxed program
    (EvaluationError LEASE_EXPIRED). A failure on a CUDA device that the runner's own check of
    the device then explains is DEVICE_ERROR, whatever the track said (runner/devices.py).
    ``per_image_out``: where a classifier task writes its per-image outcomes
    (runner.metrics.per_image; the document then names the file under ``files.per_image``);
    other tracks have none and ignore it.
    """
    from runner.devices import blame
    from runner.workdir import locked_folder, work_base

    track = _track(spec.task.slug)
    extra: dict[str, Any] = {}
    if per_image_out is not None and catalogue_task(spec.task.slug).track == "classify":
        extra["per_image_out"] = Path(per_image_out)
    # Removed afterwards whatever the sandbox left in it (runner/workdir.py).
    with locked_folder(f"runner-job-{spec.job_id}-", work_base()) as work:
        try:
            with worker_process_rules():
                result = track(spec, Path(artifact_path), work_dir=Path(work), data_root=Path(data_root),
                               trust=trust, device=device, progress=progress or no_progress, cancel=cancel,
                               **extra)
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
    """The job spec the site would send for this task and file, built from the catalogue (job 0,
    attempt 1; ``time_limit_s`` overrides the catalogue's, in seconds). Raises ValueError for a
    task the catalogue lacks and EvaluationError INVALID_ARTIFACT for a file of no known format."""
    try:
        task = catalogue_task(task_slug)
    except UnknownTask as exc:
        raise ValueError(f"unknown task {task_slug!r}") from exc
    kind = catalogue_benchmark_of(task_slug).kind
    from runner.tracks.common import builtin_or_model_file

    path = Path(artifact_path)
    data = path.read_bytes()
    fmt, _ = builtin_or_model_file(path, kind)
    return JobSpec(
        job_id=0, attempt=1,
        task=TaskSpec(slug=task.slug, kind=kind, dataset=task.dataset, params=dict(task.params),
                      time_limit_s=time_limit_s or task.time_limit_s),
        submission=SubmissionSpec(id=0, kind=kind, artifact_format=fmt, artifact_sha256=hashlib.sha256(data).hexdigest(),
                                  artifact_size=len(data), hparams=dict(hparams or {}),
                                  # the site sends builtin artifacts only for maintainers' baselines
                                  is_baseline=fmt == BUILTIN_FORMAT),
    )


class TaskParamsError(ValueError):
    """``runner run --params`` names a parameter the task lacks, or gives one of the wrong type."""


# Parameters a track reads beyond those the catalogue sets, with their JSON kind
# (runner/tracks/classify.py, optimize.py, training/tasks.py and training/text.py read them).
OPTIONAL_TASK_PARAMS: dict[str, dict[str, str]] = {
    "classify": {"batch_size": "an integer", "clean_top1": "a number"},
    "synthetic": {"max_evaluations": "an integer"},
    "train": {"precision": "a string", "test_fraction": "a number", "split_seed": "an integer",
              "target_top1": "a number", "seeds": "an integer"},
    "denoise": {},
}


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "an integer"
    return {float: "a number", str: "a string", list: "a list", dict: "an object"}.get(type(value), "null")


def check_task_params(slug: str, catalogue: dict[str, Any], given: dict[str, Any]) -> None:
    """Raise TaskParamsError unless every key of ``given`` is a parameter task ``slug`` reads (its
    catalogue params, ``catalogue``, and its track's OPTIONAL_TASK_PARAMS) with a value of the same
    JSON kind (an integer where a number is read is accepted, a boolean is not a number; ``seeds``
    may also be a list of integers): a typo such as ``stepz`` would otherwise run the whole
    catalogue budget without a word."""
    known = {key: _json_kind(value) for key, value in catalogue.items()}
    known = {**OPTIONAL_TASK_PARAMS.get(catalogue_task(slug).track, {}), **known}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise TaskParamsError(f"{slug} has no parameter {', '.join(map(repr, unknown))}; its parameters: "
                              f"{', '.join(sorted(known)) or 'none'}")
    for key, value in given.items():
        want, got = known[key], _json_kind(value)
        if key == "seeds" and isinstance(value, list) and all(_json_kind(v) == "an integer" for v in value):
            continue
        if want != got and not (want == "a number" and got == "an integer"):
            where = f" (the catalogue's: {catalogue[key]!r})" if key in catalogue else ""
            raise TaskParamsError(f"{slug}'s parameter {key!r} is {want}{where}, not {json.dumps(value)}")


class LocalRun:
    """The rules of `runner run`, which evaluates one file on several tasks in one go, as a
    worker evaluates one submission's jobs:

    1. ``tasks``: each task once, in the order given, except that imagenet-val moves before
       imagenet-c, whose relative mCE needs the submission's clean top-1.
    2. :meth:`job_spec`: the job spec the site would send (:func:`local_job_spec`), its task
       params updated with ``params`` (a smaller budget for a quick check); imagenet-c's
       carries ``clean_top1`` (%) from this run's imagenet-val result, unless the
       hyperparameters give one.
    3. :meth:`record`: each result as it comes, so that rule 2 can use it.
    """

    def __init__(self, tasks: Iterable[str], artifact_path: Path | str, hparams: dict[str, Any] | None = None, *,
                 params: dict[str, Any] | None = None):
        ordered = list(dict.fromkeys(tasks))
        if "imagenet-val" in ordered and "imagenet-c" in ordered:
            ordered.remove("imagenet-val")
            ordered.insert(ordered.index("imagenet-c"), "imagenet-val")
        self.tasks: list[str] = ordered
        self.artifact_path = Path(artifact_path)
        self.hparams = dict(hparams or {})
        self.params = dict(params or {})  # replace the catalogue's task params (`runner run --params`)
        self.clean_top1: float | None = None

    def job_spec(self, slug: str) -> JobSpec:
        """The spec of task ``slug``. Raises ValueError for a task the catalogue lacks,
        TaskParamsError (a ValueError) for ``params`` the task does not have or of another type
        than the catalogue's, and EvaluationError INVALID_ARTIFACT for a file of no known format."""
        spec = local_job_spec(slug, self.artifact_path, self.hparams)
        check_task_params(slug, spec.task.params, self.params)
        spec.task.params.update(self.params)
        if slug == "imagenet-c" and self.clean_top1 is not None and "clean_top1" not in self.hparams:
            spec.task.params["clean_top1"] = self.clean_top1
        return spec

    def record(self, slug: str, result: dict[str, Any]) -> None:
        """Note the result of task ``slug`` (a validated result document)."""
        if slug == "imagenet-val":
            self.clean_top1 = result["metrics"]["top1"]
