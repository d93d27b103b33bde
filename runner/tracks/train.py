"""Optimizer track, training tasks (opt-digits, opt-cifar10-resnet18, opt-cifar100-resnet18): a
submitted ``make_optimizer`` trains the platform's model on a fixed budget, for several seeds.
``evaluate_training`` hands the transformer workload (opt-text-transformer) to
runner/tracks/training/text.py, which has its own loop, metric and result; the steps below are
the image tasks'.

1. Read both splits here, in the trusted parent; compute the per-channel standardization from the
   training split (runner/tracks/training/tasks.py).
2. On the CPU the loop is the runner's (runner/tracks/training/loop.py): this process trains the
   model, one seed after the other, and writes the weights of every epoch to scratch as
   safetensors; the submitted optimizer runs in the sandboxed optimizer server
   (runner/opt_server.py) and sees only the parameters and gradients in shared memory. The
   sandbox holds no data of either split.
3. On a GPU (until the shared-memory loop covers CUDA) the old path stands
   (runner/tracks/training/launch.py): the training split (uint8 .npy), the task's settings, the
   training program (runner/sandboxed/training.py) and the submission go into a read-only input
   folder and the program trains in the sandbox, beside the submission, leaving the checkpoints and
   curves in scratch. The test split never enters the sandbox.
4. Load every checkpoint here (safetensors only, checked against the model's own names, shapes
   and dtypes, finite), evaluate it on the test split (runner/tracks/training/evaluation.py), and
   compute every metric (runner/metrics/training.py): final, best, epochs and seconds to
   the target, mean ± std over seeds with a t-interval; on CIFAR-10 the final weights of each seed
   are also scored on CIFAR-10-C when it is under the data root.

``bench_training`` measures the harness against the model's own speed: training items/s of the
real loop divided by a pure training step on one device-resident batch, in the same run.
"""
from __future__ import annotations

import platform
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

import runner
from runner.catalogue import catalogue_task
from runner.datasets import DATASETS
from runner.datasets.images import cuda_requested
from runner.metrics.training import METRIC_NOTES, SeedRun, summarize
from runner.progress import Progress, no_progress
from runner.sandbox import DEFAULT_MAX_SCRATCH_BYTES
from runner.sandboxed import training as training_program
from runner.spec import ErrorKind, EvaluationError, JobSpec, make_result
from runner.tracks.training.evaluation import (
    Evaluator,
    checkpoint_bytes,
    expected_state,
    load_weights,
    runs_from,
    score_corruptions,
)
from runner.tracks.training.launch import run_program, stage_inputs
from runner.tracks.training.loop import bench_in_runner, train_in_runner
from runner.tracks.training.tasks import (
    Budget,
    Splits,
    TrainingTask,
    harness_config,
    load_splits,
    task_model,
    training_task,
)
from runner.tracks.training.text import TEXT_TASKS, evaluate_text
from runner.workdir import locked_folder

REFERENCE_OPTIMIZER = Path(__file__).resolve().parent.parent / "baselines" / "optimizers" / "adam.py"
REFERENCE_HPARAMS = {"lr": 1e-3}


def evaluate_training(spec: JobSpec, artifact_path: Path, *, work_dir: Path, data_root: Path, trust: bool,
                      device: str, progress: Progress, cancel: threading.Event | None = None) -> dict[str, Any]:
    """The result document (runner.spec.make_result) of one optimizer training job: the submitted
    optimizer file at ``artifact_path`` trains the task's model for every seed of the budget in
    ``spec.task.params``; ``work_dir`` holds the sandbox's folders and the checkpoints,
    ``data_root`` the datasets, ``device`` is ``"cpu"`` or a CUDA device. ``progress(fraction
    0–1, message)`` follows the steps of the module docstring.

    The result: ``metrics`` (test and best top-1 in %, means over seeds and sample std, time to
    the target in epochs and training seconds, CIFAR-10-C top-1 where scored), ``ci95``,
    ``breakdown`` (per seed; per corruption), ``curves`` (per seed, per epoch: train_loss,
    test_top1, seconds, samples: training examples consumed by the epoch's end), ``env`` and ``timing`` (seconds). Raises EvaluationError: the
    submission's kinds (INVALID_ARTIFACT, BAD_HPARAMS, RUNTIME_ERROR, NOT_FINITE, WRONG_OUTPUT,
    OUT_OF_MEMORY, SANDBOX_VIOLATION), TIMEOUT past ``spec.task.time_limit_s``, LEASE_EXPIRED when
    ``cancel`` is set, RUNNER_ERROR for a task or budget the runner cannot run; DatasetMissing
    when the dataset is not under ``data_root``."""
    if spec.task.slug in TEXT_TASKS:  # the transformer workload: its own loop, metric and result
        return evaluate_text(spec, artifact_path, work_dir=work_dir, data_root=data_root, trust=trust, device=device,
                             progress=progress, cancel=cancel)
    started = time.perf_counter()
    task = training_task(spec.task.slug)
    budget = Budget.from_params(spec.task.params)
    progress(0.01, "reading the dataset")
    splits = load_splits(task, Path(data_root), budget)
    config = harness_config(task, budget, splits)
    model = task_model(task)
    expected, parameters = expected_state(model), sum(p.numel() for p in model.parameters())
    checkpoints = len(budget.seeds) * budget.epochs
    scratch_bytes = max(DEFAULT_MAX_SCRATCH_BYTES, checkpoints * checkpoint_bytes(expected) + (256 << 20))
    train_span = (0.05, 0.75 if task.corruptions else 0.85)
    if cuda_requested(device):  # the loop still runs in the sandbox beside the submission (docs/submissions.md)
        inputs = stage_inputs(Path(work_dir), Path(artifact_path), config, splits)
        progress(train_span[0], "training in the sandbox")
        doc, result = run_program("train", Path(work_dir), inputs, hparams=spec.submission.hparams, device=device,
                                  trust=trust, time_limit_s=spec.task.time_limit_s, memory_bytes=task.memory_bytes,
                                  scratch_bytes=scratch_bytes, progress=progress, span=train_span, cancel=cancel)
        train_wall_s, log_tail, sandbox_mode, loop = result.wall_s, result.log_tail, result.mode, "sandbox"
    else:  # the runner's loop: only the optimizer runs in the sandbox (runner/tracks/training/loop.py)
        progress(train_span[0], "training: the loop here, the optimizer in the sandbox")
        doc, train_wall_s, sandbox_mode = train_in_runner(
            config, splits, Path(artifact_path), spec.submission.hparams, Path(work_dir), trust=trust,
            time_limit_s=spec.task.time_limit_s, memory_bytes=task.memory_bytes, progress=progress,
            span=train_span, cancel=cancel, batch_bounds=task.batch_bounds)
        log_tail, loop = "", "runner"
    runs = runs_from(doc, budget, train_wall_s, log_tail)
    batch, steps_per_epoch = training_program.batch_and_steps(len(splits.train_labels), budget.batch_size)
    for run, entry in zip(runs, doc["runs"], strict=True):  # the sample loop's own counter (trusted: this process)
        counted = entry.get("samples") if loop == "runner" else None
        run.samples = ([int(v) for v in counted] if counted is not None
                       else [batch * steps_per_epoch * epoch for epoch in range(1, budget.epochs + 1)])

    evaluated = time.perf_counter()
    evaluator = Evaluator(task, splits, config, device)  # after training: the child had the device to itself
    eval_span = (train_span[1], 0.9 if task.corruptions else 0.98)
    finals = evaluate_checkpoints(runs, budget, expected, Path(work_dir) / "scratch", evaluator, progress, eval_span,
                                  cancel)
    metrics, ci95, breakdown = summarize(runs, budget.target_top1)
    env_extra: dict[str, Any] = {}
    if task.corruptions:
        c_metrics, c_ci, c_breakdown, env_extra = score_corruptions(task, finals, evaluator, Path(data_root),
                                                                     progress, (eval_span[1], 0.99), cancel)
        metrics.update(c_metrics)
        ci95.update(c_ci)
        breakdown.update(c_breakdown)
    eval_s = time.perf_counter() - evaluated

    curves = {f"seed_{run.seed}": {"epoch": list(range(1, budget.epochs + 1)), "train_loss": run.train_loss,
                                   "test_top1": run.test_top1, "seconds": run.seconds, "samples": run.samples}
              for run in runs}
    train_s = sum(run.seconds[-1] for run in runs)
    items = batch * steps_per_epoch * budget.epochs * len(runs)
    env = result_env(spec, task, budget, splits, config, evaluator, device=device, sandbox=sandbox_mode, loop=loop,
                     doc=doc, parameters=parameters, env_extra=env_extra)
    timing = {"wall_s": round(time.perf_counter() - started, 4), "sandbox_s": round(train_wall_s, 4),
              "train_s": round(train_s, 4), "eval_s": round(eval_s, 4),
              "items_per_s": round(items / train_s, 2) if train_s > 0 else 0.0}
    progress(1.0, "done")
    return make_result(spec.task.slug, metrics, ci95=ci95, breakdown=breakdown, curves=curves, env=env, timing=timing)


def evaluate_checkpoints(runs: list[SeedRun], budget: Budget, expected: dict[str, tuple[tuple[int, ...], str]],
                         scratch: Path, evaluator: Evaluator, progress: Progress, span: tuple[float, float],
                         cancel: threading.Event | None) -> dict[int, dict[str, Any]]:
    """Fill each run's ``test_top1`` (%, one per epoch) from the checkpoints in ``scratch`` and set
    its ``weights_sha256``; returns the final weights by seed. Raises EvaluationError as
    ``load_weights`` does, LEASE_EXPIRED when ``cancel`` is set."""
    finals: dict[int, dict[str, Any]] = {}
    checkpoints = len(runs) * budget.epochs
    for i, run in enumerate(runs):
        for epoch in range(1, budget.epochs + 1):
            if cancel is not None and cancel.is_set():
                raise EvaluationError(ErrorKind.LEASE_EXPIRED, "stopped: the site took the job back")
            where = f"epoch {epoch} (seed {run.seed})"
            state, digest = load_weights(scratch, training_program.checkpoint_name(run.seed, epoch), expected,
                                         checkpoint_bytes(expected), where)
            run.test_top1.append(evaluator.top1(state))
            if epoch == budget.epochs:
                finals[run.seed], run.weights_sha256 = state, digest
            done = (i * budget.epochs + epoch) / checkpoints
            progress(span[0] + (span[1] - span[0]) * done,
                     f"evaluated seed {run.seed}, epoch {epoch}: test top-1 {run.test_top1[-1]:.2f}")
    return finals


def result_env(spec: JobSpec, task: TrainingTask, budget: Budget, splits: Splits, config: dict[str, Any],
               evaluator: Evaluator, *, device: str, sandbox: str, loop: str, doc: dict[str, Any], parameters: int,
               env_extra: dict[str, Any]) -> dict[str, Any]:
    """The result's ``env``: versions, device and precision, how the run was made deterministic,
    the sandbox and whose loop ran (``"runner"`` or ``"sandbox"``), the budget, the data order,
    augmentation and standardization, and what each metric means."""
    gpu = cuda_requested(device)
    batch, steps_per_epoch = training_program.batch_and_steps(len(splits.train_labels), budget.batch_size)
    env = {
        **splits.env,
        "runner": runner.__version__, "torch": torch.__version__, "python": platform.python_version(),
        "device": str(evaluator.device), "device_name": evaluator.device_name,
        "precision": training_program.precision_label(training_program.uses_bf16(budget.precision,
                                                                                  evaluator.device.type)),
        "evaluation_precision": evaluator.precision,
        "deterministic": "torch.use_deterministic_algorithms(warn_only) + cudnn.deterministic"
                         + ("; CUBLAS_WORKSPACE_CONFIG " + training_program.CUBLAS_WORKSPACE if gpu
                            else "; 1 CPU thread"),
        "sandbox": sandbox, "loop": loop, "seeds": budget.seeds,
        **({"closure": doc.get("closure"), "hooks": doc.get("hooks", []), "evaluations": doc.get("evaluations")}
           if loop == "runner" else {}),
        **({"samples": doc["samples"]} if doc.get("samples") else {}),
        "hparams": spec.submission.hparams,
        "model": task.model, "parameters": parameters,
        "budget": {"epochs": budget.epochs, "batch_size": batch, "seeds": len(budget.seeds),
                   "steps_per_epoch": steps_per_epoch, "items_per_epoch": batch * steps_per_epoch},
        "target_top1": budget.target_top1,
        "data_order": "a seeded permutation per epoch; full batches only (the remainder changes every epoch)",
        "augmentation": "random crop 32 from 4-pixel zero padding + horizontal flip, on the device"
                        if task.augment == "crop-flip" else "none",
        "standardization": {"mean": config["mean"], "std": config["std"],
                            "from": "the training split, per channel, after / " + f"{splits.divisor:g}"},
        "loss": "cross-entropy", "params_given_to_make_optimizer": "model.parameters(), one group",
        "metric_notes": METRIC_NOTES, **env_extra,
    }
    if task.corruptions and env_extra.get(task.corruptions.lower().replace("-", ""), {}).get("synthetic_data"):
        env["synthetic_data"] = True
    return env


# --------------------------------------------------------------------------------------------
# Bench: the harness against a pure training step.
# --------------------------------------------------------------------------------------------
RELEASE_TRAIN_ITEMS = {"cifar-10-batches-py": 50_000, "cifar-100-python": 50_000}


def bench_splits(task: TrainingTask, data_root: Path, budget: Budget, folder: Path) -> Splits:
    """The task's data, or a temporary fake copy (labelled synthetic) where it is absent, its
    training split repeated to the release's size so that epoch ends (loss check, checkpoint
    write) come as often as on the real set."""
    dataset = DATASETS[task.dataset]
    if dataset.present(data_root):
        return load_splits(task, data_root, budget)
    dataset.fake(folder, n_per_class=max(1, 1000 // task.num_classes))
    splits = load_splits(task, folder, budget)
    size = RELEASE_TRAIN_ITEMS.get(task.dataset, len(splits.train_labels))
    index = np.arange(size) % len(splits.train_labels)
    splits.train_images, splits.train_labels = splits.train_images[index], splits.train_labels[index]
    return splits


def bench_training(task_slug: str, *, device: str, data_root: Path | str, seconds: float = 10.0,
                   warmup_steps: int | None = None, batch_size: int | None = None) -> dict[str, Any]:
    """Training items/s of the real harness loop, a pure training step's items/s on one
    device-resident batch, and their ratio; same model, device and run, warm-up excluded (5 steps
    on CUDA, 2 on the CPU unless ``warmup_steps`` says otherwise). ``seconds`` is split between
    the two timings; each times at least one step. The optimizer is the reference Adam (lr 1e-3);
    the data the task's, or a fake copy where it is absent (``synthetic_data``). ``batch_size``
    replaces the task's (quick checks on a CPU). Returns a flat dict (rates in items/s, times in
    seconds, the budget, the sandbox mode and whose loop ran). Raises EvaluationError
    RUNNER_ERROR for a task that does not train a model, and what a failed run raises."""
    if task_slug in TEXT_TASKS:
        raise EvaluationError(ErrorKind.RUNNER_ERROR, f"no bench for {task_slug} yet: time it with `runner run --task "
                              f"{task_slug} --params '{{\"seeds\": 1, \"steps\": 50, \"warmup_steps\": 5}}'` "
                              "(the result's timing.tokens_per_s)")
    task = training_task(task_slug)
    warmup = warmup_steps if warmup_steps is not None else (5 if cuda_requested(device) else 2)
    params = dict(catalogue_task(task_slug).params)
    if batch_size is not None:
        params["batch_size"] = batch_size
    budget = Budget.from_params({**params, "seeds": 1})
    with locked_folder("runner-bench-") as tmp:  # unmounts the scratch volume too
        splits = bench_splits(task, Path(data_root), budget, Path(tmp) / "data")
        config = harness_config(task, budget, splits, epochs=1)
        work_dir = Path(tmp) / "job"
        work_dir.mkdir()
        half = max(0.5, seconds / 2)
        if cuda_requested(device):
            inputs = stage_inputs(work_dir, REFERENCE_OPTIMIZER, config, splits)
            doc, result = run_program("bench", work_dir, inputs, hparams=REFERENCE_HPARAMS, device=device, trust=True,
                                      time_limit_s=4 * seconds + 600, memory_bytes=task.memory_bytes,
                                      scratch_bytes=DEFAULT_MAX_SCRATCH_BYTES, progress=no_progress,
                                      span=(0.0, 1.0), cancel=None,
                                      extra=["--seconds", str(half), "--warmup", str(warmup)])
            sandbox_mode, wall_s, loop = result.mode, result.wall_s, "sandbox"
        else:  # the runner's loop, the reference optimizer in the sandbox (runner/tracks/training/loop.py)
            started = time.perf_counter()
            doc = bench_in_runner(config, splits, work_dir, optimizer_file=REFERENCE_OPTIMIZER,
                                  hparams=REFERENCE_HPARAMS, seconds=half, warmup=warmup,
                                  memory_bytes=task.memory_bytes)
            sandbox_mode, wall_s, loop = doc["sandbox"], time.perf_counter() - started, "runner"
    keys = ("train_items_per_s", "pure_step_items_per_s", "ratio", "harness_steps", "harness_s", "pure_steps",
            "pure_s", "warmup_steps", "windows", "batch_size", "steps_per_epoch", "precision", "threads", "torch", "device_name")
    return {"task": task_slug, "device": device if cuda_requested(device) else "cpu", **{k: doc.get(k) for k in keys},
            "model": task.model, "train_items": int(len(splits.train_labels)),
            "synthetic_data": bool(splits.env.get("synthetic_data")), "sandbox": sandbox_mode, "loop": loop,
            "optimizer": f"{REFERENCE_OPTIMIZER.name} {REFERENCE_HPARAMS}", "wall_s": round(wall_s, 2),
            "budget": asdict(budget)}
