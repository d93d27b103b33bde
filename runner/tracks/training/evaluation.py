"""What training left, checked and scored by the parent.

- :func:`runs_from`: the per-seed curves the loop reports, checked (WRONG_OUTPUT when they are not
  what the harness writes).
- :func:`load_weights`: one checkpoint from scratch (safetensors, never a pickle), checked against
  the model's names, shapes and dtypes, every value finite.
- :class:`Evaluator`: the test split resident on the device; test top-1 (%) of a state dict.
- :func:`score_corruptions`: the final weights of every seed on CIFAR-10-C, one pass over its files.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import platform
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from runner.datasets import DATASETS
from runner.datasets.images import cuda_requested
from runner.metrics.results import result_corruptions
from runner.metrics.training import SeedRun, corruption_summary
from runner.progress import Progress
from runner.sandbox import read_scratch_file
from runner.sandboxed import training as training_program
from runner.spec import ErrorKind, EvaluationError
from runner.tracks.training.tasks import Budget, Splits, TrainingTask, task_model

ExpectedState = dict[str, tuple[tuple[int, ...], str]]  # name -> (shape, dtype as torch prints it)


def runs_from(doc: dict[str, Any], budget: Budget, wall_s: float, log_tail: str) -> list[SeedRun]:
    """The per-seed curves in the training document ``doc`` (``runs``: per seed ``seed``,
    ``train_loss`` and ``seconds``, one value per epoch), checked against the budget and the
    ``wall_s`` seconds training took. Raises EvaluationError WRONG_OUTPUT when they are not what
    the harness writes (on CUDA the submission shares the program's process and could have
    tampered with them)."""

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


def expected_state(model: Any) -> ExpectedState:
    """Each state-dict entry's shape and dtype (floating point entries as float32)."""
    return {k: (tuple(v.shape), str(v.dtype if not v.is_floating_point() else torch.float32))
            for k, v in model.state_dict().items()}


def checkpoint_bytes(expected: ExpectedState) -> int:
    """An upper bound on one checkpoint's size: 8 bytes a value (float32 is 4) plus the header."""
    return sum(int(np.prod(shape)) * 8 for shape, _ in expected.values()) + (64 << 10)


def load_weights(scratch: Path, name: str, expected: ExpectedState, max_bytes: int,
                 where: str) -> tuple[dict[str, Any], str]:
    """The state dict in scratch file ``name`` (safetensors, never a pickle, at most ``max_bytes``)
    and its sha256 (hex), checked against the model's names, shapes and dtypes, every value
    finite. Raises EvaluationError WRONG_OUTPUT (missing, unreadable, not the model's) or
    NOT_FINITE, naming ``where`` (``"epoch 3 (seed 0)"``)."""
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
        self.mean, self.std = training_program.channel_stats(config["mean"], config["std"], self.device)
        images = torch.from_numpy(np.ascontiguousarray(splits.test_images.transpose(0, 3, 1, 2))).to(self.device)
        self.inputs = training_program.standardize(images, config["divisor"], self.mean, self.std)
        self.labels = torch.from_numpy(splits.test_labels).to(self.device)

    @property
    def precision(self) -> str:
        return training_program.precision_label(self.mixed)

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
        """The predicted class of each standardized input (N, C, H, W) → (N,) int64."""
        inputs = inputs.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        deterministic = (torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True)
                         if self.device.type == "cuda" else contextlib.nullcontext())
        with (torch.inference_mode(), deterministic,
              torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.mixed)):
            return model(inputs).argmax(dim=1)

    def top1(self, state: dict[str, Any]) -> float:
        """Test top-1 (%) of the weights ``state`` on the whole test split."""
        model = self.load(state)
        correct = 0
        for start in range(0, len(self.labels), self.batch):
            stop = start + self.batch
            correct += int((self.predict(model, self.inputs[start:stop]) == self.labels[start:stop]).sum())
        return 100.0 * correct / len(self.labels)


def score_corruptions(task: TrainingTask, states: dict[int, dict[str, Any]], evaluator: Evaluator, data_root: Path,
                      progress: Progress, span: tuple[float, float],
                      cancel: threading.Event | None = None) -> tuple[dict[str, float], dict, dict, dict]:
    """(metrics, ci95, breakdown, env) of the final weights (``states``: by seed) on
    ``task.corruptions`` (runner.metrics.training ``corruption_summary``); when the set is not
    under the data root, only an env entry that says so. Raises EvaluationError LEASE_EXPIRED
    when ``cancel`` is set."""
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
    per_seed = {seed: result_corruptions(f"{prefix[:-1]}-c", np.concatenate(parts), targets.labels, targets.corruption,
                                        targets.severity)
                for seed, parts in predictions.items()}
    metrics, ci95, breakdown = corruption_summary(prefix, per_seed)
    env = {prefix: {"present": True, **reader.env,
                    "scored": "the final weights of every seed; top-1 per corruption × severity, mean over the "
                              "15 × 5 sets, then over seeds (per_corruption: mean over seeds)"}}
    return metrics, ci95, breakdown, env
