"""The transformer workload ``opt-text-transformer`` (shared/PROTOCOLS.md, "Small transformer on 2
CPU cores"): a submitted ``make_optimizer`` trains a byte-level transformer language model on
CPython's pydoc text (runner/datasets/text.py), several seeds, each from fixed initial weights and
a fixed data order, in the runner's loop.

The runner owns everything but the update: the model (runner/sandboxed/training.py
``ByteTransformer``, 875,520 parameters), the data, the loss, the step counter, the budget, the
learning-rate schedule and the evaluations. The submitted optimizer runs in the sandboxed optimizer
server (runner/opt_server.py, runner/sandboxed/optimizer_server.py), one per seed, and sees only the
parameters and their gradients in shared memory; the pydoc text is hidden from its sandbox (an
empty folder over ``pydoc_data``), so it cannot train on the validation split. Per step ``k`` of
``steps``:

1. draw ``batch_size`` windows of ``context + 1`` bytes at uniform random offsets of the training
   split (a CPU generator seeded with the seed): inputs the first ``context`` bytes, targets the
   next byte of each;
2. forward, mean cross-entropy, backward (skipped for an optimizer whose ``step`` requires a
   closure: each closure is a forward and backward on this batch, counted, at most
   :data:`EVALUATIONS_PER_STEP` × ``steps`` a seed, as on the image tasks);
3. the optimizer's step with ``lr_scale`` = :func:`runner.metrics.text.lr_scale` (linear warm-up
   over ``warmup_steps``, then cosine to 0 at the last step): the server sets every param group's
   ``lr`` to the ``lr`` make_optimizer gave it times that scale, so the optimizer's ``lr`` is the
   peak;
4. copy the shared parameters back into the runner's model. A training loss that is not finite is
   NOT_FINITE naming the step.

Every ``eval_every`` steps, at step 0 and after the last step the runner computes the validation
bits per byte outside the sandbox (:func:`validation_bpb`). The hooks of the image tasks
(``first_layer_stats``, ``el2n_scores``, ``next_batch_size``, ``gradient_variance``) are not
offered: an optimizer that wants one is INVALID_ARTIFACT naming the task.
"""
from __future__ import annotations

import hashlib
import importlib.util
import math
import platform
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import runner
from runner.datasets import DATASETS
from runner.datasets.text import ByteReader
from runner.metrics.text import TEXT_METRIC_NOTES, TextRun, bits_per_byte, lr_scale, summarize_text
from runner.opt_server import OptimizerServer, host_sandbox_mode
from runner.progress import Progress
from runner.sandboxed import training as training_program
from runner.spec import ErrorKind, EvaluationError, JobSpec, make_result
from runner.tracks.training.launch import hidden_package_data
from runner.tracks.training.loop import cpu_settings

TEXT_TASKS = ("opt-text-transformer",)
MODEL = "byte-transformer"
VOCABULARY = 256
MEMORY_BYTES = 8 << 30  # the optimizer's sandbox: torch needs about 4 GiB of address space to import
EVALUATIONS_PER_STEP = 26  # closures a step may use on average (LBFGS's default max_eval is 25)
EVAL_WINDOWS = 64  # validation windows per forward


@dataclass
class TextBudget:
    """The budget in a job's params: ``steps`` optimizer steps of ``batch_size`` windows of
    ``context`` bytes, ``warmup_steps`` of linear warm-up then cosine to 0, an evaluation every
    ``eval_every`` steps, ``seeds`` (a count or a list), torch ``threads`` in the runner."""

    steps: int = 800
    batch_size: int = 32
    context: int = 128
    warmup_steps: int = 50
    eval_every: int = 50
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    threads: int = 2

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> TextBudget:
        """The budget in ``params`` (the catalogue's, or a test's overrides). Raises
        EvaluationError RUNNER_ERROR when one is malformed, empty or does not fit (warm-up longer
        than the run, a context the model does not have)."""
        try:
            seeds = params.get("seeds", 3)
            budget = cls(steps=int(params["steps"]), batch_size=int(params["batch_size"]),
                         context=int(params.get("context", 128)), warmup_steps=int(params.get("warmup_steps", 50)),
                         eval_every=int(params.get("eval_every", 50)),
                         seeds=list(range(int(seeds))) if not isinstance(seeds, list) else [int(s) for s in seeds],
                         threads=int(params.get("threads", 2)))
        except (KeyError, TypeError, ValueError) as exc:
            raise EvaluationError(ErrorKind.RUNNER_ERROR, f"the task's params do not name a budget: {exc}") from exc
        if budget.steps < 1 or budget.batch_size < 1 or budget.eval_every < 1 or not budget.seeds:
            raise EvaluationError(ErrorKind.RUNNER_ERROR, f"the task's budget is empty: {params}")
        if not 0 <= budget.warmup_steps <= budget.steps or not 1 <= budget.context <= 128 or budget.threads < 1:
            raise EvaluationError(ErrorKind.RUNNER_ERROR, f"the task's budget does not fit the model: {params}")
        return budget

    def evaluated(self, step: int) -> bool:
        """Whether the validation bpb is computed after ``step`` (0 is the initial weights)."""
        return step % self.eval_every == 0 or step == self.steps


def text_model(seed: int) -> torch.nn.Module:
    """The task's model with seed ``seed``'s initial weights, on the CPU, in training mode."""
    model = training_program.build_model(MODEL, VOCABULARY, 0, seed)
    model.train()
    return model


def windows(data: torch.Tensor, starts: torch.Tensor, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), int64 [len(starts), context]: ``data[s:s+context]`` and
    ``data[s+1:s+context+1]`` for each start ``s`` (``data``: uint8 bytes, 1-D)."""
    index = starts[:, None] + torch.arange(context + 1)
    chunk = data[index].long()
    return chunk[:, :-1], chunk[:, 1:]


def next_byte_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean next-byte cross-entropy (nats) of ``model`` on inputs ``x`` and targets ``y`` [B, T]."""
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


def validation_bpb(model: torch.nn.Module, data: torch.Tensor, context: int) -> float:
    """Bits per byte of ``model`` on ``data`` (uint8 bytes, 1-D): the summed next-byte
    cross-entropy over the non-overlapping windows (window i: bytes ``context·i`` …
    ``context·i + context − 1`` predict the next byte of each; ⌊(n − 1) / context⌋ windows, the
    shorter tail left out), over the number of predicted bytes, / ln 2 (runner/metrics/text.py
    ``bits_per_byte``). Eval mode, no gradients; float32 logits, log-softmax in float64. Raises
    ValueError when ``data`` holds no whole window."""
    count = (len(data) - 1) // context
    if count < 1:
        raise ValueError(f"{len(data)} bytes hold no window of {context} + 1")
    starts = torch.arange(count) * context
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        with torch.no_grad():
            for first in range(0, count, EVAL_WINDOWS):
                x, y = windows(data, starts[first:first + EVAL_WINDOWS], context)
                logits = model(x).double()
                total += float(F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum"))
    finally:
        model.train(was_training)
    return bits_per_byte(total, count * context)


def hidden_text(work_dir: Path) -> list[Any]:
    """Read-only binds for the optimizer's sandbox: an empty folder over the standard library's
    ``pydoc_data`` (the text, validation split included) and over the package data
    runner/tracks/training/launch.py hides."""
    binds = hidden_package_data(work_dir)
    spec = importlib.util.find_spec("pydoc_data")
    folders = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    empty = work_dir / "hidden-text"
    empty.mkdir(mode=0o755, exist_ok=True)
    empty.chmod(0o755)
    return [*binds, *((empty, folder) for folder in folders if folder.is_dir())]


def weights_sha256(params: Sequence[torch.Tensor]) -> str:
    """sha256 (hex) of the parameters' float32 bytes, in order."""
    digest = hashlib.sha256()
    for param in params:
        digest.update(param.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


class TextTrainer:
    """Trains every seed of one job. ``train_seed`` returns its :class:`TextRun`; ``closure``,
    ``sandbox`` and ``evaluations`` (all seeds) describe the run for the result's env."""

    def __init__(self, budget: TextBudget, train: torch.Tensor, val: torch.Tensor, *, artifact: Path,
                 hparams: dict[str, Any], work_dir: Path, trust: bool, deadline: float, time_limit_s: float,
                 cancel: threading.Event | None, progress: Progress):
        self.budget, self.train, self.val = budget, train, val
        self.artifact, self.hparams, self.work_dir, self.trust = Path(artifact), hparams, Path(work_dir), trust
        self.deadline, self.time_limit_s, self.cancel, self.progress = deadline, time_limit_s, cancel, progress
        self.closure = False
        self.sandbox = ""
        self.evaluations = 0

    def check_time(self, where: str) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise EvaluationError(ErrorKind.LEASE_EXPIRED, "stopped: the site took the job back")
        if time.monotonic() > self.deadline:
            raise EvaluationError(ErrorKind.TIMEOUT, f"ran past the task's time limit of {self.time_limit_s:g} s "
                                  f"at {where} and was stopped")

    def _server(self, seed: int) -> OptimizerServer:
        folder = self.work_dir / f"optimizer-seed{seed}"
        folder.mkdir()
        return OptimizerServer(self.artifact, self.hparams, work_dir=folder, time_limit_s=self.time_limit_s,
                               deadline=self.deadline, memory_bytes=MEMORY_BYTES, trust=self.trust,
                               cancel=self.cancel, seed=seed, ro_binds=hidden_text(folder))

    def train_seed(self, seed: int, index: int) -> TextRun:
        """Seed ``seed`` (the ``index``-th of the budget's): model, data order and optimizer from
        that seed; raises EvaluationError (the optimizer server's kinds, NOT_FINITE, TIMEOUT,
        LEASE_EXPIRED, INVALID_ARTIFACT for an optimizer that wants a hook)."""
        budget = self.budget
        model = text_model(seed)
        params = list(model.parameters())
        generator = torch.Generator().manual_seed(seed)
        run = TextRun(seed)
        high = len(self.train) - budget.context  # starts in [0, high): a window of context + 1 bytes fits
        counter = {"evaluations": 0}
        batch: list[torch.Tensor] = []  # the step's (inputs, targets)
        losses: list[float] = []  # the current step's closure losses (the first: at the weights before its update)
        with self._server(seed) as server:
            try:
                server.start([tuple(p.shape) for p in params])
                if server.wants:
                    raise EvaluationError(ErrorKind.INVALID_ARTIFACT, f"the optimizer wants "
                                          f"{', '.join(sorted(server.wants))}, which opt-text-transformer does not "
                                          "offer: its loop hands the optimizer gradients (and closures) only; the "
                                          "hooks are the image training tasks'")
                self.closure = server.closure
                shared = server.shared
                assert shared is not None
                with torch.no_grad():
                    for param, value in zip(params, shared.values, strict=True):
                        value.copy_(param)

                def gradients() -> float:
                    """A forward and backward on the step's batch at the parameters in shared memory."""
                    counter["evaluations"] += 1
                    with torch.no_grad():
                        for param, value in zip(params, shared.values, strict=True):
                            param.copy_(value)
                    model.zero_grad(set_to_none=True)
                    loss = next_byte_loss(model, batch[0], batch[1])
                    loss.backward()
                    for param, grad in zip(params, shared.grads, strict=True):
                        if param.grad is None:
                            grad.zero_()
                        else:
                            grad.copy_(param.grad)
                    return float(loss.detach())

                self._evaluate(model, run, 0, 0.0, math.nan)
                trained, step_losses = 0.0, list[float]()
                for step in range(1, budget.steps + 1):
                    where = f"step {step} of {budget.steps} (seed {seed})"
                    self.check_time(where)
                    started = training_program.CLOCK()
                    batch[:] = windows(self.train, torch.randint(0, high, (budget.batch_size,), generator=generator),
                                       budget.context)
                    losses.clear()
                    first = None if server.closure else gradients()
                    kept = [p.detach().clone() for p in params] if server.closure else []
                    done = server.step(step, lambda: _first(losses, gradients()), where=where,
                                       lr_scale=lr_scale(step, budget.warmup_steps, budget.steps),
                                       evaluations_left=lambda: counter["evaluations"] < EVALUATIONS_PER_STEP * budget.steps)
                    with torch.no_grad():
                        for param, value, before in zip(params, shared.values, kept or params, strict=True):
                            param.copy_(value if done else before)
                            value.copy_(param)
                    trained += training_program.CLOCK() - started
                    if not done:  # the evaluations ran out inside the step: it is abandoned, training ends
                        if run.step[-1] != step - 1:
                            self._evaluate(model, run, step - 1, trained, _mean(step_losses))
                        break
                    loss = first if first is not None else (losses[0] if losses else math.nan)
                    if not math.isfinite(loss):
                        raise EvaluationError(ErrorKind.NOT_FINITE, f"the training loss became {loss} at {where}: "
                                              "the update before it left the weights NaN or infinite; lower the "
                                              "learning rate or guard the update")
                    if step == 1:
                        run.train_loss[0] = loss  # step 0's point: the first minibatch at the initial weights
                    step_losses.append(loss)
                    if budget.evaluated(step):
                        self._evaluate(model, run, step, trained, _mean(step_losses))
                        step_losses = []
                        self.progress((index + step / budget.steps) / len(budget.seeds),
                                      f"seed {seed}, step {step}/{budget.steps}: val bpb {run.val_bpb[-1]:.4f}")
            finally:
                self.evaluations += counter["evaluations"]
        self.sandbox = self.sandbox or server.sandbox_mode()
        run.evaluations = counter["evaluations"]
        run.weights_sha256 = weights_sha256(params)
        return run

    def _evaluate(self, model: torch.nn.Module, run: TextRun, step: int, trained: float, train_loss: float) -> None:
        bpb = validation_bpb(model, self.val, self.budget.context)
        if not math.isfinite(bpb):
            raise EvaluationError(ErrorKind.NOT_FINITE, f"the validation bits per byte became {bpb} after step {step} "
                                  f"(seed {run.seed}): the optimizer left the weights NaN or infinite")
        run.step.append(step)
        run.samples.append(step * self.budget.batch_size)
        run.tokens.append(step * self.budget.batch_size * self.budget.context)
        run.seconds.append(trained)
        run.train_loss.append(train_loss)
        run.val_bpb.append(bpb)


def _first(losses: list[float], loss: float) -> float:
    """Keep a closure's loss (the step's first: at the weights before the update); return it."""
    losses.append(loss)
    return loss


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else math.nan


def evaluate_text(spec: JobSpec, artifact_path: Path, *, work_dir: Path, data_root: Path, trust: bool,
                  device: str, progress: Progress, cancel: threading.Event | None = None) -> dict[str, Any]:
    """The result document (runner.spec.make_result) of one ``opt-text-transformer`` job: the
    optimizer file at ``artifact_path`` trains the task's model for every seed of the budget in
    ``spec.task.params`` (:class:`TextBudget`) on the CPU, whatever ``device`` says (the task's
    pool is the CPU's; ``env.device`` says where it ran). ``progress(fraction 0–1, message)``
    after each evaluation.

    The result: ``metrics`` (runner/metrics/text.py ``summarize_text``: val_bpb_mean,
    val_bpb_std, best_val_bpb_mean, best_val_bpb_std, final_train_loss_mean, runs), ``ci95``,
    ``breakdown.per_seed``, ``curves.seed_<seed>`` (step, samples, tokens, seconds, train_loss,
    val_bpb), ``env`` and ``timing`` (seconds). Raises EvaluationError: the submission's kinds
    (INVALID_ARTIFACT, BAD_HPARAMS, RUNTIME_ERROR, NOT_FINITE, WRONG_OUTPUT, OUT_OF_MEMORY,
    SANDBOX_VIOLATION), TIMEOUT past ``spec.task.time_limit_s``, LEASE_EXPIRED when ``cancel`` is
    set, RUNNER_ERROR for a budget the runner cannot run."""
    started = time.monotonic()
    budget = TextBudget.from_params(spec.task.params)
    dataset = DATASETS["pydoc-topics"]
    train_reader, val_reader = (dataset.open(data_root, split=split, context=budget.context) for split in ("train", "val"))
    assert isinstance(train_reader, ByteReader) and isinstance(val_reader, ByteReader)
    train, val = torch.from_numpy(train_reader.data), torch.from_numpy(val_reader.data)
    progress(0.01, "training: the loop here, the optimizer in the sandbox")
    with cpu_settings(budget.threads):
        threads = torch.get_num_threads()
        trainer = TextTrainer(budget, train, val, artifact=Path(artifact_path), hparams=spec.submission.hparams,
                              work_dir=Path(work_dir), trust=trust, deadline=started + spec.task.time_limit_s,
                              time_limit_s=spec.task.time_limit_s, cancel=cancel,
                              progress=lambda fraction, message: progress(0.02 + 0.97 * fraction, message))
        runs = [trainer.train_seed(seed, i) for i, seed in enumerate(budget.seeds)]
    metrics, ci95, breakdown = summarize_text(runs)
    env = text_env(spec, budget, train_reader.env, trainer, threads=threads)
    wall_s = time.monotonic() - started
    train_s = sum(run.seconds[-1] for run in runs)
    tokens = sum(run.tokens[-1] for run in runs)
    timing = {"wall_s": round(wall_s, 4), "train_s": round(train_s, 4), "eval_s": round(max(0.0, wall_s - train_s), 4),
              "tokens_per_s": round(tokens / train_s, 2) if train_s > 0 else 0.0}
    progress(1.0, "done")
    return make_result(spec.task.slug, metrics, ci95=ci95, breakdown=breakdown,
                       curves={f"seed_{run.seed}": run.curves() for run in runs}, env=env, timing=timing)


def text_env(spec: JobSpec, budget: TextBudget, data_env: dict[str, Any], trainer: TextTrainer, *,
             threads: int) -> dict[str, Any]:
    """The result's ``env``: versions, the text's hash and Python version (results compare only
    within one hash), whose loop ran, the budget and schedule, the data order, the model and what
    each metric means."""
    env = {key: value for key, value in data_env.items() if key != "split"}
    return {
        **env,
        "runner": runner.__version__, "torch": torch.__version__, "python": platform.python_version(),
        "device": "cpu", "device_name": "cpu", "threads": threads,
        "deterministic": "torch.use_deterministic_algorithms(warn_only); fixed torch threads",
        "sandbox": trainer.sandbox or host_sandbox_mode(), "loop": "runner", "seeds": budget.seeds,
        "closure": trainer.closure, "evaluations": trainer.evaluations, "hparams": spec.submission.hparams,
        "model": MODEL, "parameters": sum(p.numel() for p in text_model(0).parameters()),
        "model_description": "pre-LN decoder: d 128, 4 layers, 4 heads, MLP 4× GELU, learned positions, "
                             "context 128, untied head, no dropout; PyTorch's default initialization of each layer",
        "budget": {**asdict(budget), "tokens_per_seed": budget.steps * budget.batch_size * budget.context},
        "lr_schedule": {"warmup_steps": budget.warmup_steps, "decay": "cosine to 0 at the last step",
                        "formula": "lr_k = lr · k / warmup for k ≤ warmup, else lr · ½(1 + cos(π (k − warmup) / "
                                   "(steps − warmup)))",
                        "applied_by": "the runner: each param group's lr as make_optimizer set it is the peak"},
        "data_order": "per step, batch_size windows of context + 1 bytes at uniform random offsets of the "
                      "training split (torch CPU generator seeded with the seed)",
        "loss": "next-byte cross-entropy (nats), mean over the batch's positions",
        "params_given_to_make_optimizer": "model.parameters(), one group",
        "hooks": [],  # the same key as the image tasks' (the hooks the optimizer used): none offered here
        "hooks_note": "this task offers no hook (first_layer_stats, el2n_scores, grand_scores, next_batch_size and "
                      "gradient_variance are the image tasks'); closures (LBFGS) run, each a counted forward and "
                      "backward on the step's batch",
        "metric_notes": TEXT_METRIC_NOTES,
    }
