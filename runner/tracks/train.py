"""Optimizer track, training tasks (opt-digits, opt-cifar10-resnet18, opt-cifar100-resnet18): a
submitted ``make_optimizer`` trains the platform's model on a fixed budget, for several seeds.

1. Read both splits here, in the trusted parent; compute the per-channel standardization from the
   training split.
2. On the CPU the loop is the runner's (runner/tracks/train_loop.py): this process trains the
   model, one seed after the other, and writes the weights of every epoch to scratch as
   safetensors; the submitted optimizer runs in the sandboxed optimizer server
   (runner/opt_server.py) and sees only the parameters and gradients in shared memory. The
   sandbox holds no data of either split.
3. On a GPU (until the shared-memory loop covers CUDA) the old path stands: the training split
   (uint8 .npy), the task's settings, the training program (runner/train_child.py, with
   runner/child.py beside it) and the submission go into a read-only input folder and the program
   trains in the sandbox, beside the submission, leaving the checkpoints and curves in scratch.
   The test split never enters the sandbox.
4. Load every checkpoint here (safetensors only, checked against the model's own names, shapes
   and dtypes, finite), evaluate it on the test split, and compute every metric: final, best,
   epochs and seconds to the target, mean ± std over seeds with a t-interval; on CIFAR-10 the
   final weights of each seed are also scored on CIFAR-10-C when it is under the data root.

``bench_training`` measures the harness against the model's own speed: training items/s of the
real loop divided by a pure training step on one device-resident batch, in the same run.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import math
import platform
import shutil
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import runner
from runner.catalogue import catalogue_task
from runner.datasets import DATASETS, DatasetMissing
from runner.datasets.images import cuda_requested
from runner.progress import Progress, no_progress
from runner.sandbox import (
    DEFAULT_MAX_SCRATCH_BYTES,
    SandboxResult,
    read_scratch_file,
    run_sandboxed,
)
from runner.sandboxed import stage
from runner.sandboxed import training as train_child
from runner.spec import ErrorKind, EvaluationError, JobSpec, make_result
from runner.tracks.optimize import progress_reader, read_child_doc
from runner.untrusted import Schema
from runner.workdir import locked_folder

GiB = 1 << 30
REFERENCE_OPTIMIZER = Path(__file__).resolve().parent.parent / "baselines" / "optimizers" / "adam.py"
REFERENCE_HPARAMS = {"lr": 1e-3}
# Student's t, two-sided 95% (0.975 quantile), by degrees of freedom; past 30 the normal's 1.96
# is within 4% (the catalogue runs 3 or 5 seeds).
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


@dataclass(frozen=True)
class TrainingTask:
    slug: str
    model: str
    dataset: str
    num_classes: int
    augment: str
    memory_bytes: int  # address space of the sandbox on the CPU
    corruptions: str = ""  # the -C dataset the final weights are also scored on


TRAINING_TASKS = {
    "opt-digits": TrainingTask("opt-digits", "digits-cnn", "sklearn-digits", 10, "none", 8 * GiB),
    "opt-cifar10-resnet18": TrainingTask("opt-cifar10-resnet18", "cifar-resnet18", "cifar-10-batches-py", 10,
                                         "crop-flip", 16 * GiB, corruptions="CIFAR-10-C"),
    "opt-cifar100-resnet18": TrainingTask("opt-cifar100-resnet18", "cifar-resnet18", "cifar-100-python", 100,
                                          "crop-flip", 16 * GiB),
}


@dataclass
class Budget:
    """The task's fixed budget, from the job's params (the catalogue's, or a test's overrides)."""

    epochs: int
    batch_size: int
    seeds: list[int]
    target_top1: float
    precision: str = "auto"
    test_fraction: float = 0.25  # opt-digits: the same split as the digits classifier task
    split_seed: int = 0

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Budget:
        try:
            seeds = params.get("seeds", 1)
            budget = cls(
                epochs=int(params["epochs"]), batch_size=int(params["batch_size"]),
                seeds=list(range(int(seeds))) if not isinstance(seeds, list) else [int(s) for s in seeds],
                target_top1=float(params.get("target_top1", 100.0)),
                precision=str(params.get("precision", "auto")),
                test_fraction=float(params.get("test_fraction", 0.25)), split_seed=int(params.get("split_seed", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise EvaluationError(ErrorKind.RUNNER_ERROR, f"the task's params do not name a budget: {exc}") from exc
        if budget.epochs < 1 or budget.batch_size < 1 or not budget.seeds:
            raise EvaluationError(ErrorKind.RUNNER_ERROR, f"the task's budget is empty: {params}")
        if budget.precision not in ("auto", "bf16", "float32"):
            raise EvaluationError(ErrorKind.RUNNER_ERROR, f"unknown precision {budget.precision!r}")
        return budget


@dataclass
class Splits:
    """Both splits as uint8 NHWC arrays (digits: values 0–16, CIFAR: 0–255), parent side only."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    divisor: float
    env: dict[str, Any]

    def standardization(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std (population) of the training split after / divisor."""
        x = self.train_images.astype(np.float64) / self.divisor
        return [float(v) for v in x.mean(axis=(0, 1, 2))], [float(v) for v in x.std(axis=(0, 1, 2))]


def load_splits(task: TrainingTask, data_root: Path, budget: Budget) -> Splits:
    dataset = DATASETS[task.dataset]
    if not dataset.present(data_root):
        raise DatasetMissing(f"{task.dataset} is not under {data_root}; run `runner data prepare {task.dataset}` "
                             f"(or `runner data fake {task.dataset}` for a labelled synthetic copy)")
    options = {"test_fraction": budget.test_fraction, "split_seed": budget.split_seed} if task.slug == "opt-digits" else {}
    train = dataset.open(data_root, split="train", **options)
    test = dataset.open(data_root, split="test", **options)
    env = {**test.env, "train_split": train.env, "test_split": test.env.get("split", "test")}
    env["synthetic_data"] = bool(train.env.get("synthetic_data") or test.env.get("synthetic_data"))
    env["dataset_warnings"] = [*train.env.get("dataset_warnings", []), *test.env.get("dataset_warnings", [])]
    env.pop("split", None)
    return Splits(train.images, np.asarray(train.targets.labels, dtype=np.int64), test.images,
                  np.asarray(test.targets.labels, dtype=np.int64), float(getattr(train, "divisor", 255.0)), env)


# --------------------------------------------------------------------------------------------
# Staging and running the sandboxed program.
# --------------------------------------------------------------------------------------------
def child_config(task: TrainingTask, budget: Budget, splits: Splits, *, epochs: int | None = None) -> dict[str, Any]:
    mean, std = splits.standardization()
    return {"model": task.model, "num_classes": task.num_classes, "epochs": epochs or budget.epochs,
            "batch_size": budget.batch_size, "seeds": budget.seeds, "mean": mean, "std": std,
            "divisor": splits.divisor, "augment": task.augment, "pad": 4, "precision": budget.precision,
            "threads": 1}


def stage_inputs(work_dir: Path, source: Path, config: dict[str, Any], splits: Splits) -> Path:
    """A world-readable folder the sandbox reads through a read-only bind: the two programs, the
    submission, the settings and the training split. Nothing of the test split."""
    work_dir.chmod(0o711)
    inputs = work_dir / "input"
    inputs.mkdir(mode=0o755)
    inputs.chmod(0o755)
    stage("training.py", inputs)
    shutil.copyfile(source, inputs / "submission.py")
    (inputs / train_child.TASK_FILE).write_text(json.dumps(config))
    np.save(inputs / train_child.TRAIN_IMAGES, np.ascontiguousarray(splits.train_images, dtype=np.uint8))
    np.save(inputs / train_child.TRAIN_LABELS, np.ascontiguousarray(splits.train_labels, dtype=np.int64))
    for path in inputs.iterdir():
        path.chmod(0o644)
    return inputs


def hidden_package_data(work_dir: Path) -> list[Any]:
    """Read-only binds that lay an empty folder over dataset files shipped inside packages the
    sandbox can read through the interpreter's binds: scikit-learn's bundled digits, test split
    included, would otherwise be one ``load_digits()`` away from the submission."""
    spec = importlib.util.find_spec("sklearn")
    folders = [Path(p) / "datasets" / "data" for p in (spec.submodule_search_locations or [])] if spec else []
    folders = [f for f in folders if f.is_dir()]
    if not folders:
        return []
    empty = work_dir / "hidden"
    empty.mkdir(mode=0o755, exist_ok=True)
    empty.chmod(0o755)
    return [(empty, folder) for folder in folders]


class SeedReport(Schema):
    seed: int
    train_loss: list[float]
    seconds: list[float]


class TrainingReport(Schema):
    """What ``train_child.py train`` writes on success: per seed, the curves."""

    runs: list[SeedReport]


class BenchReport(Schema):
    """What ``train_child.py bench`` writes on success."""

    train_items_per_s: float
    pure_step_items_per_s: float
    ratio: float
    harness_steps: int
    harness_s: float
    pure_steps: int
    pure_s: float
    warmup_steps: int
    batch_size: int
    steps_per_epoch: int
    precision: str
    threads: int
    torch: str
    device_name: str


def run_child(command: str, work_dir: Path, inputs: Path, *, hparams: dict[str, Any], device: str, trust: bool,
              time_limit_s: float, memory_bytes: int, scratch_bytes: int, progress: Progress, span: tuple[float, float],
              cancel: threading.Event | None, extra: list[str] | None = None) -> tuple[dict[str, Any], SandboxResult]:
    scratch = work_dir / "scratch"
    gpu = cuda_requested(device)
    argv = [sys.executable, "-I", str(inputs / "training.py"), command, "--source", str(inputs / "submission.py"),
            "--hparams", json.dumps(hparams), "--data", str(inputs), "--device", device if gpu else "cpu",
            "--out", str(scratch / train_child.OUT_FILE), *(extra or [])]
    result = run_sandboxed(argv, scratch=scratch, ro_binds=[inputs, *hidden_package_data(work_dir)],
                           time_limit_s=time_limit_s, memory_bytes=memory_bytes, trust=trust, gpu=gpu,
                           cancel=cancel, max_scratch_bytes=scratch_bytes,
                           env={"CUBLAS_WORKSPACE_CONFIG": train_child.CUBLAS_WORKSPACE},
                           on_stdout_line=progress_reader(progress, span[0], span[1] - span[0]))
    schema = TrainingReport if command == "train" else BenchReport
    return read_child_doc(scratch, result, schema), result


# --------------------------------------------------------------------------------------------
# What the child reports (curves), checked; the weights it leaves, checked and evaluated.
# --------------------------------------------------------------------------------------------
@dataclass
class SeedRun:
    seed: int
    train_loss: list[float]
    seconds: list[float]
    test_top1: list[float] = field(default_factory=list)
    weights_sha256: str = ""


def runs_from(doc: dict[str, Any], budget: Budget, wall_s: float, log_tail: str) -> list[SeedRun]:
    """The child's per-seed curves, or WRONG_OUTPUT when they are not what the harness writes (the
    submission shares the child's process and could have tampered with them)."""

    def broken(what: str) -> EvaluationError:
        return EvaluationError(ErrorKind.WRONG_OUTPUT, f"the training report {what}; did the submission "
                               "tamper with the harness's output?", log_tail)

    raw = doc.get("runs")
    if not isinstance(raw, list) or len(raw) != len(budget.seeds):
        raise broken(f"holds {len(raw) if isinstance(raw, list) else 0} runs for {len(budget.seeds)} seeds")
    runs = []
    for seed, entry in zip(budget.seeds, raw, strict=True):
        if not isinstance(entry, dict) or entry.get("seed") != seed:
            raise broken(f"does not follow the seeds {budget.seeds}")
        curves = {}
        for key in ("train_loss", "seconds"):
            values = entry.get(key)
            if (not isinstance(values, list) or len(values) != budget.epochs
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                               for v in values)):
                raise broken(f"has no {budget.epochs} finite {key} values for seed {seed}")
            curves[key] = [float(v) for v in values]
        seconds = curves["seconds"]
        if seconds[0] < 0 or any(b < a for a, b in zip(seconds, seconds[1:], strict=False)):
            raise broken(f"has seconds that run backwards for seed {seed}")
        runs.append(SeedRun(seed, curves["train_loss"], seconds))
    if sum(run.seconds[-1] for run in runs) > wall_s + 1.0:
        raise broken(f"claims more training seconds than the {wall_s:.1f} s the program ran")
    return runs


def expected_state(model: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (tuple(v.shape), str(v.dtype if not v.is_floating_point() else torch.float32))
            for k, v in model.state_dict().items()}


def task_model(task: TrainingTask) -> Any:
    """The task's model with seed 0's weights, on the CPU (for names, shapes and sizes)."""

    return train_child.build_model(task.model, task.num_classes, 1 if task.model == "digits-cnn" else 3, 0)


def checkpoint_bytes(expected: dict[str, tuple[tuple[int, ...], str]]) -> int:
    """An upper bound on one checkpoint's size: 8 bytes a value (float32 is 4) plus the header."""
    return sum(int(np.prod(shape)) * 8 for shape, _ in expected.values()) + (64 << 10)


def load_weights(scratch: Path, name: str, expected: dict[str, tuple[tuple[int, ...], str]],
                 max_bytes: int, where: str) -> tuple[dict[str, Any], str]:
    """The state dict in scratch file ``name`` (safetensors, never a pickle) and its sha256, checked
    against the model's names, shapes and dtypes, every value finite."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    raw = read_scratch_file(scratch, name, max_bytes=max_bytes)
    if raw is None:
        raise EvaluationError(ErrorKind.WRONG_OUTPUT, f"the weights after {where} are missing from scratch; "
                              "the submission must leave the harness's files alone")
    try:
        state = load_safetensors(raw)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise EvaluationError(ErrorKind.WRONG_OUTPUT, f"the weights after {where} are not a readable "
                              f"safetensors file: {exc}") from exc
    if set(state) != set(expected):
        odd = sorted(set(state) ^ set(expected))[:5]
        raise EvaluationError(ErrorKind.WRONG_OUTPUT, f"the weights after {where} do not match the model: "
                              f"unexpected or missing {', '.join(odd)}")
    for key, (shape, dtype) in expected.items():
        tensor = state[key]
        if tuple(tensor.shape) != shape or str(tensor.dtype) != dtype:
            raise EvaluationError(ErrorKind.WRONG_OUTPUT, f"after {where} the weights {key} are "
                                  f"{tensor.dtype} {list(tensor.shape)}, the model has {dtype} {list(shape)}: "
                                  "the optimizer must update parameters in place")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise EvaluationError(ErrorKind.NOT_FINITE, f"after {where} the weights {key} hold NaN or infinity: "
                                  "lower the learning rate or guard the update")
    return state, hashlib.sha256(raw).hexdigest()


class Evaluator:
    """The test split resident on the device, standardized as in training; top-1 of a state dict."""

    def __init__(self, task: TrainingTask, splits: Splits, config: dict[str, Any], device: str):
        self.task = task
        self.device = torch.device(device if cuda_requested(device) else "cpu")
        self.config = config
        # On CUDA as in training: bf16 autocast and channels_last (the evaluation passes would
        # otherwise take longer than the training itself); float32 on the CPU.
        self.mixed = self.device.type == "cuda"
        self.memory_format = torch.channels_last if self.mixed else torch.contiguous_format
        self.model = self.new_model()
        self.batch = 1000 if self.device.type == "cuda" else 250
        self.mean, self.std = train_child.channel_stats(config["mean"], config["std"], self.device)
        images = torch.from_numpy(np.ascontiguousarray(splits.test_images.transpose(0, 3, 1, 2))).to(self.device)
        self.inputs = train_child.standardize(images, config["divisor"], self.mean, self.std)
        self.labels = torch.from_numpy(splits.test_labels).to(self.device)

    @property
    def precision(self) -> str:

        return train_child.precision_label(self.mixed)

    @property
    def device_name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return platform.processor() or platform.machine() or "cpu"

    def new_model(self, state: dict[str, Any] | None = None) -> Any:
        model = task_model(self.task)
        if state is not None:
            model.load_state_dict(state, strict=True)
        return model.to(self.device, memory_format=self.memory_format).eval()

    def load(self, state: dict[str, Any]) -> Any:
        self.model.load_state_dict(state, strict=True)
        return self.model

    def predict(self, model: Any, inputs: Any) -> Any:
        inputs = inputs.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        deterministic = (torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True)
                         if self.device.type == "cuda" else contextlib.nullcontext())
        with (torch.inference_mode(), deterministic,
              torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.mixed)):
            return model(inputs).argmax(dim=1)

    def top1(self, state: dict[str, Any]) -> float:
        model = self.load(state)
        correct = 0
        for start in range(0, len(self.labels), self.batch):
            stop = start + self.batch
            correct += int((self.predict(model, self.inputs[start:stop]) == self.labels[start:stop]).sum())
        return 100.0 * correct / len(self.labels)


# --------------------------------------------------------------------------------------------
# Metrics.
# --------------------------------------------------------------------------------------------
def t_interval(values: list[float], low: float | None = None, high: float | None = None) -> list[float] | None:
    """95% Student-t interval of the mean over seeds (None for fewer than two), clipped to the
    metric's range."""
    n = len(values)
    if n < 2:
        return None
    mean = float(np.mean(values))
    half = (T_975[n - 2] if n - 2 < len(T_975) else 1.96) * float(np.std(values, ddof=1)) / math.sqrt(n)
    lo, hi = mean - half, mean + half
    if low is not None:
        lo = max(lo, low)
    if high is not None:
        hi = min(hi, high)
    return [lo, hi]


def sample_std(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarize(runs: list[SeedRun], target: float) -> tuple[dict[str, float], dict[str, list[float]], dict[str, Any]]:
    """Metrics, intervals and the per-seed breakdown of finished runs."""
    finals = [run.test_top1[-1] for run in runs]
    bests = [max(run.test_top1) for run in runs]
    per_seed: dict[str, Any] = {}
    reached_epochs, reached_seconds = [], []
    for run in runs:
        hit = next((i for i, top1 in enumerate(run.test_top1) if top1 >= target), None)
        if hit is not None:
            reached_epochs.append(hit + 1)
            reached_seconds.append(run.seconds[hit])
        per_seed[f"seed_{run.seed}"] = {
            "test_top1": run.test_top1[-1], "best_top1": max(run.test_top1),
            "best_epoch": int(np.argmax(run.test_top1)) + 1, "final_train_loss": run.train_loss[-1],
            "reached_target": hit is not None, "epochs_to_target": None if hit is None else hit + 1,
            "seconds_to_target": None if hit is None else run.seconds[hit], "train_s": run.seconds[-1],
            "weights_sha256": run.weights_sha256,
        }
    metrics: dict[str, float] = {
        "test_top1_mean": float(np.mean(finals)), "test_top1_std": sample_std(finals),
        "best_top1_mean": float(np.mean(bests)), "best_top1_std": sample_std(bests),
        "final_train_loss_mean": float(np.mean([run.train_loss[-1] for run in runs])),
        "runs_reaching_target": len(reached_epochs), "runs": len(runs),
    }
    intervals = {"test_top1_mean": t_interval(finals, 0.0, 100.0), "best_top1_mean": t_interval(bests, 0.0, 100.0)}
    if reached_epochs:
        metrics["epochs_to_target_mean"] = float(np.mean(reached_epochs))
        metrics["seconds_to_target_mean"] = float(np.mean(reached_seconds))
        intervals["epochs_to_target_mean"] = t_interval(reached_epochs, 0.0)
        intervals["seconds_to_target_mean"] = t_interval(reached_seconds, 0.0)
    ci95 = {k: v for k, v in intervals.items() if v is not None}
    return metrics, ci95, {"per_seed": per_seed}


METRIC_NOTES = {
    "test_top1_mean": "top-1 (%) on the test split of the weights after the last epoch, mean over seeds",
    "test_top1_std": "sample standard deviation (n − 1) over seeds; 0 for one seed",
    "best_top1_mean": "the highest per-epoch test top-1 of each seed, mean over seeds",
    "epochs_to_target_mean": "first epoch whose test top-1 ≥ target_top1, mean over the runs that reached it "
                             "(absent when none did; runs_reaching_target counts them)",
    "seconds_to_target_mean": "training seconds (measured by the harness inside the sandbox, checkpoint "
                              "writing and evaluation excluded) up to that epoch, mean over the runs that "
                              "reached it; runs that never reach the target are left out, not averaged in",
    "ci95": "Student-t 95% interval of the mean over seeds (n − 1 degrees of freedom), clipped to the "
            "metric's range; it measures seed-to-seed variation, not the test set's sampling error; "
            "absent with one seed",
    "train_loss": "mean cross-entropy of the epoch's minibatches in training mode, as the harness in the "
                  "sandbox recorded it (not re-derived by the parent; never ranked)",
    "test_top1": "evaluated by the runner outside the sandbox from each epoch's weights (eval mode; float32 "
                 "on the CPU, bf16 autocast + channels_last on CUDA)",
}


# --------------------------------------------------------------------------------------------
# CIFAR-10-C: the final weights of every seed, one pass over the corruption files.
# --------------------------------------------------------------------------------------------
def score_corruptions(task: TrainingTask, states: dict[int, dict[str, Any]], evaluator: Evaluator, data_root: Path,
                      progress: Progress, span: tuple[float, float],
                      cancel: threading.Event | None = None) -> tuple[dict[str, float], dict, dict, dict]:
    """(metrics, ci95, breakdown, env) of the final weights on ``task.corruptions``; when the set
    is not under the data root, only an env entry that says so."""
    from runner.metrics import results as runner_metrics

    key = task.corruptions
    prefix = key.lower().replace("-", "")  # cifar10c
    dataset = DATASETS[key]
    if not dataset.present(data_root):
        return {}, {}, {}, {prefix: {"present": False, "note": f"{key} is not under {data_root}: robustness was "
                                     f"not scored (`runner data prepare {key}` adds it)"}}
    reader = dataset.open(data_root, include_extra=False)
    mean, std = evaluator.mean, evaluator.std
    models = {seed: evaluator.new_model(state) for seed, state in states.items()}
    predictions: dict[int, list[np.ndarray]] = {seed: [] for seed in models}
    done = 0
    for batch in reader.batches(evaluator.batch, device=str(evaluator.device)):
        if cancel is not None and cancel.is_set():
            raise EvaluationError(ErrorKind.LEASE_EXPIRED, "stopped: the site took the job back")
        inputs = batch.inputs if hasattr(batch.inputs, "to") else torch.from_numpy(batch.inputs)
        inputs = (inputs.to(evaluator.device) - mean) / std
        for seed, model in models.items():
            predictions[seed].append(evaluator.predict(model, inputs).cpu().numpy())
        done += len(batch)
        progress(span[0] + (span[1] - span[0]) * done / reader.size, f"{key}: {done}/{reader.size} images")
    targets = reader.targets
    per_seed_top1, tables = {}, []
    for seed, parts in predictions.items():
        doc = runner_metrics.result_corruptions(f"{prefix[:-1]}-c", np.concatenate(parts), targets.labels,
                                                targets.corruption, targets.severity)
        per_seed_top1[f"seed_{seed}"] = doc["metrics"]["top1"]
        tables.append(doc["breakdown"]["per_corruption"])
    values = list(per_seed_top1.values())
    metrics = {f"{prefix}_top1": float(np.mean(values)), f"{prefix}_corruption_error": float(100 - np.mean(values))}
    ci95 = {}
    interval = t_interval(values, 0.0, 100.0)
    if interval is not None:
        ci95[f"{prefix}_top1"] = interval
        ci95[f"{prefix}_corruption_error"] = [100 - interval[1], 100 - interval[0]]
    per_corruption = {name: {sev: float(np.mean([t[name][sev] for t in tables])) for sev in severities}
                      for name, severities in tables[0].items()}
    breakdown = {"per_corruption": per_corruption, f"{prefix}_per_seed": per_seed_top1}
    env = {prefix: {"present": True, **reader.env,
                    "scored": "the final weights of every seed; top-1 per corruption × severity, mean over the "
                              "15 × 5 sets, then over seeds (per_corruption: mean over seeds)"}}
    return metrics, ci95, breakdown, env


# --------------------------------------------------------------------------------------------
# The track.
# --------------------------------------------------------------------------------------------
def training_task(slug: str) -> TrainingTask:
    try:
        return TRAINING_TASKS[slug]
    except KeyError as exc:
        raise EvaluationError(ErrorKind.RUNNER_ERROR, f"{slug!r} is not an optimizer training task") from exc


def evaluate_training(spec: JobSpec, artifact_path: Path, *, work_dir: Path, data_root: Path, trust: bool,
                      device: str, progress: Progress, cancel: threading.Event | None = None) -> dict[str, Any]:
    """The result document of one optimizer training job (see the module docstring)."""
    started = time.perf_counter()
    task = training_task(spec.task.slug)
    budget = Budget.from_params(spec.task.params)
    progress(0.01, "reading the dataset")
    splits = load_splits(task, Path(data_root), budget)
    config = child_config(task, budget, splits)
    model = task_model(task)
    expected, parameters = expected_state(model), sum(p.numel() for p in model.parameters())
    checkpoints = len(budget.seeds) * budget.epochs
    scratch_bytes = max(DEFAULT_MAX_SCRATCH_BYTES, checkpoints * checkpoint_bytes(expected) + (256 << 20))
    train_span = (0.05, 0.75 if task.corruptions else 0.85)
    if cuda_requested(device):  # the loop still runs in the sandbox beside the submission (docs/submissions.md)
        inputs = stage_inputs(Path(work_dir), Path(artifact_path), config, splits)
        progress(train_span[0], "training in the sandbox")
        doc, result = run_child("train", Path(work_dir), inputs, hparams=spec.submission.hparams, device=device,
                                trust=trust, time_limit_s=spec.task.time_limit_s, memory_bytes=task.memory_bytes,
                                scratch_bytes=scratch_bytes, progress=progress, span=train_span, cancel=cancel)
        train_wall_s, log_tail, sandbox_mode, loop = result.wall_s, result.log_tail, result.mode, "sandbox"
    else:  # the runner's loop: only the optimizer runs in the sandbox (runner/tracks/train_loop.py)
        from runner.tracks.train_loop import train_in_runner

        progress(train_span[0], "training: the loop here, the optimizer in the sandbox")
        doc, train_wall_s, sandbox_mode = train_in_runner(
            config, splits, Path(artifact_path), spec.submission.hparams, Path(work_dir), trust=trust,
            time_limit_s=spec.task.time_limit_s, memory_bytes=task.memory_bytes, progress=progress,
            span=train_span, cancel=cancel)
        log_tail, loop = "", "runner"
    runs = runs_from(doc, budget, train_wall_s, log_tail)

    evaluated = time.perf_counter()
    evaluator = Evaluator(task, splits, config, device)  # after training: the child had the device to itself
    scratch = Path(work_dir) / "scratch"

    finals: dict[int, dict[str, Any]] = {}
    eval_span = (train_span[1], 0.9 if task.corruptions else 0.98)
    for i, run in enumerate(runs):
        for epoch in range(1, budget.epochs + 1):
            if cancel is not None and cancel.is_set():
                raise EvaluationError(ErrorKind.LEASE_EXPIRED, "stopped: the site took the job back")
            where = f"epoch {epoch} (seed {run.seed})"
            state, digest = load_weights(scratch, train_child.checkpoint_name(run.seed, epoch), expected,
                                         checkpoint_bytes(expected), where)
            run.test_top1.append(evaluator.top1(state))
            if epoch == budget.epochs:
                finals[run.seed], run.weights_sha256 = state, digest
            done = (i * budget.epochs + epoch) / checkpoints
            progress(eval_span[0] + (eval_span[1] - eval_span[0]) * done,
                     f"evaluated seed {run.seed}, epoch {epoch}: test top-1 {run.test_top1[-1]:.2f}")
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
                                   "test_top1": run.test_top1, "seconds": run.seconds} for run in runs}
    train_s = sum(run.seconds[-1] for run in runs)
    batch, steps_per_epoch = train_child.batches_of(len(splits.train_labels), budget.batch_size)
    items = batch * steps_per_epoch * budget.epochs * len(runs)
    gpu = cuda_requested(device)
    env = {
        **splits.env,
        "runner": runner.__version__, "torch": torch.__version__, "python": platform.python_version(),
        "device": str(evaluator.device), "device_name": evaluator.device_name,
        "precision": train_child.precision_label(train_child.uses_bf16(budget.precision, evaluator.device.type)),
        "evaluation_precision": evaluator.precision,
        "deterministic": "torch.use_deterministic_algorithms(warn_only) + cudnn.deterministic"
                         + ("; CUBLAS_WORKSPACE_CONFIG " + train_child.CUBLAS_WORKSPACE if gpu else "; 1 CPU thread"),
        "sandbox": sandbox_mode, "loop": loop, "seeds": budget.seeds,
        **({"closure": doc.get("closure"), "evaluations": doc.get("evaluations")} if loop == "runner" else {}), "hparams": spec.submission.hparams,
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
    timing = {"wall_s": round(time.perf_counter() - started, 4), "sandbox_s": round(train_wall_s, 4),
              "train_s": round(train_s, 4), "eval_s": round(eval_s, 4),
              "items_per_s": round(items / train_s, 2) if train_s > 0 else 0.0}
    progress(1.0, "done")
    return make_result(spec.task.slug, metrics, ci95=ci95, breakdown=breakdown, curves=curves, env=env, timing=timing)


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
    replaces the task's (quick checks on a CPU)."""
    task = training_task(task_slug)
    warmup = warmup_steps if warmup_steps is not None else (5 if cuda_requested(device) else 2)
    params = dict(catalogue_task(task_slug).params)
    if batch_size is not None:
        params["batch_size"] = batch_size
    budget = Budget.from_params({**params, "seeds": 1})
    with locked_folder("runner-bench-") as tmp:  # unmounts the scratch volume too
        splits = bench_splits(task, Path(data_root), budget, Path(tmp) / "data")
        config = child_config(task, budget, splits, epochs=1)
        work_dir = Path(tmp) / "job"
        work_dir.mkdir()
        half = max(0.5, seconds / 2)
        if cuda_requested(device):
            inputs = stage_inputs(work_dir, REFERENCE_OPTIMIZER, config, splits)
            doc, result = run_child("bench", work_dir, inputs, hparams=REFERENCE_HPARAMS, device=device, trust=True,
                                    time_limit_s=4 * seconds + 600, memory_bytes=task.memory_bytes,
                                    scratch_bytes=DEFAULT_MAX_SCRATCH_BYTES, progress=no_progress,
                                    span=(0.0, 1.0), cancel=None,
                                    extra=["--seconds", str(half), "--warmup", str(warmup)])
            sandbox_mode, wall_s, loop = result.mode, result.wall_s, "sandbox"
        else:  # the runner's loop, the reference optimizer in the sandbox (runner/tracks/train_loop.py)
            from runner.tracks.train_loop import bench_in_runner

            started = time.perf_counter()
            doc = bench_in_runner(config, splits, work_dir, optimizer_file=REFERENCE_OPTIMIZER,
                                  hparams=REFERENCE_HPARAMS, seconds=half, warmup=warmup,
                                  memory_bytes=task.memory_bytes)
            sandbox_mode, wall_s, loop = doc["sandbox"], time.perf_counter() - started, "runner"
    keys = ("train_items_per_s", "pure_step_items_per_s", "ratio", "harness_steps", "harness_s", "pure_steps",
            "pure_s", "warmup_steps", "batch_size", "steps_per_epoch", "precision", "threads", "torch", "device_name")
    return {"task": task_slug, "device": device if cuda_requested(device) else "cpu", **{k: doc.get(k) for k in keys},
            "model": task.model, "train_items": int(len(splits.train_labels)),
            "synthetic_data": bool(splits.env.get("synthetic_data")), "sandbox": sandbox_mode, "loop": loop,
            "optimizer": f"{REFERENCE_OPTIMIZER.name} {REFERENCE_HPARAMS}", "wall_s": round(wall_s, 2),
            "budget": asdict(budget)}
