"""The training tasks' loop in the runner (CPU): the trusted process holds the model, the data,
the loss, the counters and the budget, runs every forward and backward, and writes the
checkpoints; the submitted optimizer runs in the sandboxed optimizer server (runner/opt_server.py,
runner/sandboxed/optimizer_server.py), one per seed, and sees only the parameters and their
gradients in shared memory. After each step the runner copies the parameters back into its own
model: the sandbox never holds a tensor the runner trains or scores.

It reuses the training program's harness (runner/sandboxed/training.py: data order,
augmentation, loss, epoch ends, NaN checks, checkpoints), so a job's numbers are those of the
sandboxed training program it replaces: the same float32 arithmetic on the same data in the same
order. An optimizer that wants ``next_batch_size``, ``el2n_scores``, ``grand_scores`` or ``gradient_variance``
(docs/submissions.md, "Hooks") runs instead on :meth:`RunnerHarness.train_in_samples`, whose
budget is counted in samples; every other optimizer keeps the fixed loop and its numbers.
"""
from __future__ import annotations

import contextlib
import copy
import math
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from runner.opt_server import SCORE_HOOKS, OptimizerServer, host_sandbox_mode
from runner.sandboxed import rules
from runner.sandboxed import training as training_program
from runner.sandboxed.rules import ChildError
from runner.spec import ErrorKind, EvaluationError
from runner.tracks.training.launch import hidden_package_data
from runner.tracks.training.tasks import DEFAULT_BATCH_BOUNDS
from runner.tracks.training.variance import gradient_norms_by_batch, gradient_variance

SAMPLE_HOOKS = frozenset({"next_batch_size", "el2n_scores", "gradient_variance", "grand_scores"})  # put a seed on the sample loop


class RemoteOptimizer:
    """The runner's handle on the sandboxed optimizer of one seed: ``step`` publishes the
    gradients, lets the child update the shared parameters, and copies them into the model.
    ``closure_batch`` is the batch a closure (LBFGS) re-evaluates: the current one."""

    def __init__(self, server: OptimizerServer, params: list[torch.Tensor], harness: RunnerHarness):
        self.server, self.params, self.harness = server, params, harness
        self.shared = server.shared
        self.steps = 0
        self.evaluations = 0
        self.batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def _publish_grads(self) -> None:
        for param, grad in zip(self.params, self.shared.grads, strict=True):
            if param.grad is None:
                grad.zero_()
            else:
                grad.copy_(param.grad)

    def _closure_gradients(self) -> float:
        """A forward and backward on the current batch at the parameters now in shared memory."""
        self.evaluations += 1
        with torch.no_grad():
            for param, value in zip(self.params, self.shared.values, strict=True):
                param.copy_(value)
        model = self.harness.model
        model.zero_grad(set_to_none=True)
        x, y = self.batch
        loss = self.harness.loss_of(model, x, y)
        loss.backward()
        self._publish_grads()
        return float(loss.detach())

    def step(self, where: str) -> None:
        self.harness.check_time(where)
        self.steps += 1
        # The shared parameters already hold what this process copied back after the last step:
        # whatever the child writes there before its next "done" is its update, and only what
        # is there at "done" is read.
        self._publish_grads()
        if "first_layer_stats" in self.server.hooks:
            self.shared.extras["first_layer_stats"].copy_(self.harness.first_layer_stats(self.batch[0]))
        if "gradient_variance" in self.server.hooks:
            started = time.monotonic()
            self.shared.extras["gradient_variance"].copy_(self.harness.gradient_variance(self.harness.model,
                                                                                         *self.batch))
            self.harness.variance_s += time.monotonic() - started
        before = [p.detach().clone() for p in self.params] if self.server.closure else None
        done = self.server.step(self.steps, self._closure_gradients, where=where, batch_size=len(self.batch[1]),
                                evaluations_left=lambda: self.evaluations < self.harness.max_evaluations)
        with torch.no_grad():
            if not done:  # the evaluations ran out inside the step: it is abandoned, the weights stay
                for param, value, kept in zip(self.params, self.shared.values, before, strict=True):
                    param.copy_(kept)
                    value.copy_(kept)
                return
            for param, value in zip(self.params, self.shared.values, strict=True):
                param.copy_(value)
        if "next_batch_size" in self.server.hooks and self.server.batch_size_request is not None:
            low, high = self.harness.batch_bounds
            if not low <= self.server.batch_size_request <= high:
                raise EvaluationError(ErrorKind.WRONG_OUTPUT, f"after {where} the optimizer asked for a batch "
                                      f"size of {self.server.batch_size_request}; this task's bounds are "
                                      f"{low}..{high} examples")


class RunnerHarness(training_program.Harness):
    """The training program's Harness with the optimizer in the sandbox and the loop here. Never compiles or
    executes the submission in this process."""

    def __init__(self, config: training_program.TaskConfig, data: training_program.TrainingData, *, artifact: Path,
                 hparams: dict[str, Any], work_dir: Path, checkpoints: Path, trust: bool, memory_bytes: int,
                 deadline: float, time_limit_s: float, cancel: threading.Event | None, progress,
                 batch_bounds: tuple[int, int] = DEFAULT_BATCH_BOUNDS):
        self.config, self.data, self.device = config, data, torch.device("cpu")
        self.filename, self.hparams, self.scratch, self.progress = str(artifact), hparams, str(checkpoints), progress
        self.artifact, self.work_dir, self.trust, self.memory_bytes = Path(artifact), Path(work_dir), trust, memory_bytes
        self.deadline, self.time_limit_s, self.cancel = deadline, time_limit_s, cancel
        self.cuda = self.mixed = False
        self.memory_format = torch.contiguous_format
        self.batch, self.steps_per_epoch = training_program.batch_and_steps(data.size, config.batch_size)
        self.mean, self.std = training_program.channel_stats(config.mean, config.std, self.device)
        self.standardized = None
        if config.augment != "crop-flip":
            self.standardized = training_program.standardize(data.images, config.divisor, self.mean, self.std)
        self.max_evaluations = 26 * self.steps_per_epoch * config.epochs
        self.servers = contextlib.ExitStack()
        self.sandbox = ""
        self.closure = False
        self.hooks: list[str] = []  # the runner hooks the optimizer declared and this task offers
        self.evaluations = 0
        self.batch_bounds = batch_bounds
        self.samples: list[dict[str, Any]] = []  # per seed on the sample loop: what it counted
        self.variance_s = 0.0  # this seed's seconds computing gradient_variance (not counted in the budget)
        self._ready: tuple[Any, RemoteOptimizer] | None = None

    def check_time(self, where: str) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise EvaluationError(ErrorKind.LEASE_EXPIRED, "stopped: the site took the job back")
        if time.monotonic() > self.deadline:
            raise EvaluationError(ErrorKind.TIMEOUT, f"ran past the task's time limit of {self.time_limit_s:g} s "
                                  f"at {where} and was stopped")

    def first_layer_stats(self, x: torch.Tensor) -> torch.Tensor:
        """XᵀX / b of the first conv layer's input: X the b × n matrix of the batch's patches
        (b = batch · output positions, n = C_in·k·k), as TrAct defines it; float32 n × n."""
        layer = self.first_layer
        patches = F.unfold(x, layer.kernel_size, dilation=layer.dilation, padding=layer.padding, stride=layer.stride)
        rows = patches.transpose(1, 2).reshape(-1, patches.shape[1]).double()
        return (rows.T @ rows / rows.shape[0]).float()

    def el2n_scores(self, model: torch.nn.Module) -> torch.Tensor:
        """‖softmax(logits) − onehot(y)‖₂ of every training example (float32 [n_train], unitless,
        0..√2) at the current weights: unaugmented, standardized images (crop-flip tasks: the
        centre crop), the model in eval mode, in the loop's batch size; EL2N as Paul et al. define it."""
        n = self.data.size
        scores = torch.empty(n, dtype=torch.float32)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for start in range(0, n, self.batch):
                    index = torch.arange(start, min(start + self.batch, n))
                    x = self._unaugmented(index)
                    logits = model(x).float()
                    onehot = F.one_hot(self.data.labels[index], logits.shape[1]).float()
                    scores[start:start + len(index)] = (logits.softmax(1) - onehot).norm(dim=1)
        finally:
            model.train(was_training)
        return scores

    def grand_scores(self, model: torch.nn.Module) -> torch.Tensor:
        """GraNd, ‖∇_w CE(f_w(x), y)‖₂ over every parameter, of every training example (float32
        [n_train], gradient units) at the current weights: unaugmented, standardized images
        (crop-flip tasks: the centre crop), in the training split's order, in batches of the loop's
        batch size, each with BatchNorm at its own statistics (runner/tracks/training/variance.py
        ``gradient_norms_by_batch``); running statistics untouched."""
        return gradient_norms_by_batch(model, self._unaugmented, self.data.labels, self.batch)

    def _unaugmented(self, index: torch.Tensor) -> torch.Tensor:
        """The training images ``index`` as scoring sees them: standardized, unaugmented (crop-flip
        tasks: the centre crop of the padded image)."""
        if self.standardized is not None:
            return self.standardized[index]
        size, pad = self.data.image_size, self.config.pad
        crops = self.data.images[index, :, pad:pad + size, pad:pad + size]
        return training_program.standardize(crops, self.config.divisor, self.mean, self.std)

    def gradient_variance(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """runner/tracks/training/variance.py's ``gradient_variance`` of the batch: float32 [P]."""
        return gradient_variance(model, x, y)

    def new_run(self, seed: int):
        if self._ready is not None:  # train_seed started it to read the optimizer's hooks
            ready, self._ready = self._ready, None
            return ready
        self.servers.close()
        model = training_program.build_model(self.config.model, self.config.num_classes, self.data.images.shape[1],
                                             seed)
        model.train()
        params = list(model.parameters())
        folder = self.work_dir / f"optimizer-seed{seed}"
        folder.mkdir()
        server = self.servers.enter_context(OptimizerServer(
            self.artifact, self.hparams, work_dir=folder, time_limit_s=self.time_limit_s, deadline=self.deadline,
            memory_bytes=self.memory_bytes, trust=self.trust, cancel=self.cancel, seed=seed,
            ro_binds=hidden_package_data(folder)))
        self.first_layer = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
        extras = {}
        if self.first_layer is not None:
            n = self.first_layer.in_channels * math.prod(self.first_layer.kernel_size)
            extras["first_layer_stats"] = (n, n)
        extras["el2n_scores"] = extras["grand_scores"] = extras["selection"] = (self.data.size,)
        extras["gradient_variance"] = (sum(p.numel() for p in params),)
        server.start([tuple(p.shape) for p in params], extras, offers=("next_batch_size",))
        with torch.no_grad():
            for param, value in zip(params, server.shared.values, strict=True):
                value.copy_(param)
            server.shared.extras["selection"].fill_(1.0)
        self.closure = server.closure
        self.hooks = sorted(server.hooks)
        optimizer = RemoteOptimizer(server, params, self)
        self.remote = optimizer
        return model, optimizer

    def step(self, model, optimizer: RemoteOptimizer, x, y, where: str):
        model.zero_grad(set_to_none=True)
        loss = self.loss_of(model, x, y)
        loss.backward()
        optimizer.batch = (x, y)
        optimizer.step(where)
        self.evaluations += 1
        return loss.detach()

    def train_seed(self, seed: int, **options) -> dict[str, Any]:
        """One seed: the training program's loop (fixed batches, epochs of whole batches), or the
        sample loop when the optimizer asked for ``next_batch_size`` or ``el2n_scores``."""
        try:
            model, optimizer = self._ready = self.new_run(seed)
            if options.get("clock") is None and optimizer.server.hooks & SAMPLE_HOOKS:
                self._ready = None
                return self.train_in_samples(seed, model, optimizer, **options)
            return super().train_seed(seed, **options)
        finally:
            self._ready = None
            self.servers.close()  # the child has ended: its sandbox result is known
            self.sandbox = self.sandbox or self._mode()
            if getattr(self, "remote", None) is not None:
                self.evaluations += self.remote.evaluations
                self.remote = None

    def train_in_samples(self, seed: int, model: torch.nn.Module, optimizer: RemoteOptimizer, *,
                         first_fraction: float = 0.0, span: float = 1.0) -> dict[str, Any]:
        """Train one seed for the budget counted in samples: ``epochs × n_train`` (the budget's
        epochs, n_train the training split's size), every trained example and every example scored
        for ``el2n_scores`` or ``grand_scores`` counting one (once per hook). Batches start at the budget's batch size and follow each
        ``next_batch_size`` the optimizer asks for; the last batch is cut to what the budget has
        left. Examples are drawn from a seeded permutation of the selected examples (all, unless
        the score hooks' selection says otherwise), a fresh one when the next batch no longer fits
        in what is left of it. An epoch ends each time the sample counter passes a multiple of
        n_train: its train loss is the sample-weighted mean of its steps' losses (the last
        epoch's when it had none), then its checkpoint is written, as on the fixed loop. Returns
        the curves (per epoch ``train_loss``, ``seconds`` and ``samples``: the sample counter
        when the epoch ended, trained and scored examples, so ≥ epoch · n_train); ``self.samples`` gets what was counted (and, for ``gradient_variance``,
        ``variance_s``: seconds of per-sample gradients, inside the curve's seconds, outside the budget). Raises ChildError NOT_FINITE and the
        optimizer server's errors (WRONG_OUTPUT for a size out of bounds or an empty selection)."""
        self.model, self.optimizer = model, optimizer
        server, shared = optimizer.server, optimizer.shared
        self.variance_s = 0.0
        generator = torch.Generator().manual_seed(seed)
        n, epochs = self.data.size, self.config.epochs
        budget = epochs * n
        size, samples, scored, epoch, step = self.batch, 0, 0, 1, 0
        plan: tuple[torch.Tensor, ...] = ()
        cursor = 0
        losses: list[torch.Tensor] = []
        weights: list[int] = []
        sizes: list[list[int]] = []  # [batch size, steps in a row at it]: a short list however long the run
        curve: dict[str, list[float]] = {"train_loss": [], "seconds": [], "samples": []}
        trained, started = 0.0, training_program.CLOCK()
        while samples < budget:
            take = min(size, budget - samples)
            if cursor + take > len(plan[0] if plan else ()):  # what is left of this order is left out
                plan, cursor = self._draw(generator, server, f"epoch {epoch}, step {step + 1} (seed {seed})"), 0
                take = min(take, len(plan[0]))
            step += 1
            where = f"epoch {epoch}, step {step}, sample {samples + 1} of {budget} (seed {seed})"
            x, y = self.inputs(plan, cursor, cursor + take)
            cursor += take
            loss = self.step(model, optimizer, x, y, where)
            losses.append(loss)
            weights.append(take)
            if sizes and sizes[-1][0] == take:
                sizes[-1][1] += 1
            else:
                sizes.append([take, 1])
            samples += take
            if server.batch_size_request is not None:
                size = server.batch_size_request
            if server.scores_request:  # each score hook the optimizer declared: n_train samples each
                for hook in sorted(server.hooks & SCORE_HOOKS):
                    shared.extras[hook].copy_(self.el2n_scores(model) if hook == "el2n_scores"
                                              else self.grand_scores(model))
                    scored += n
                    samples = min(budget, samples + n)
            while epoch <= epochs and samples >= epoch * n:
                trained += training_program.CLOCK() - started
                curve["train_loss"].append(self._epoch_loss(losses, weights, curve, epoch, seed))
                curve["seconds"].append(trained)
                curve["samples"].append(samples)  # the counter when this epoch ended (≥ epoch · n_train)
                losses, weights = [], []
                self.save_checkpoint(model, seed, epoch)
                self.progress(first_fraction + span * epoch / epochs,
                              f"seed {seed}, epoch {epoch}/{epochs}, train loss {curve['train_loss'][-1]:.4f}")
                epoch += 1
                started = training_program.CLOCK()
        self.samples.append({"seed": seed, "samples": samples, "scored": scored, "steps": step,
                             "batch_sizes": sizes,
                             **({"variance_s": self.variance_s} if "gradient_variance" in server.hooks else {})})
        return {"seed": seed, **curve}

    def _draw(self, generator: torch.Generator, server: OptimizerServer, where: str) -> tuple[torch.Tensor, ...]:
        """The next order of the selected examples (the whole epoch plan, filtered)."""
        plan = self.epoch_plan(generator)
        if not server.hooks & SCORE_HOOKS:
            return plan
        selected = server.shared.extras["selection"] != 0
        if not bool(selected.any()):
            raise EvaluationError(ErrorKind.WRONG_OUTPUT, f"at {where} the optimizer's selection holds no "
                                  f"example of the {self.data.size}: set at least one entry nonzero")
        keep = selected[plan[0]]
        return tuple(t[keep] for t in plan)

    @staticmethod
    def _epoch_loss(losses: list[torch.Tensor], weights: list[int], curve: dict[str, list[float]], epoch: int,
                    seed: int) -> float:
        if not losses:
            return curve["train_loss"][-1] if curve["train_loss"] else float("nan")
        values = torch.stack(losses).double()
        bad = torch.nonzero(~torch.isfinite(values)).flatten()
        if len(bad):
            raise ChildError(rules.NOT_FINITE, f"the training loss became {float(values[int(bad[0])])} in epoch "
                             f"{epoch} (seed {seed}): the update before it left the weights NaN or infinite; "
                             "lower the learning rate or guard the update")
        return float((values * torch.tensor(weights, dtype=torch.float64)).sum() / sum(weights))

    def _mode(self) -> str:
        optimizer = getattr(self, "remote", None)
        return optimizer.server.sandbox_mode() if optimizer is not None else host_sandbox_mode()


def training_data(config: training_program.TaskConfig, images, labels) -> training_program.TrainingData:
    """The training split (uint8 NHWC numpy, int labels) as the harness holds it."""
    import numpy as np

    tensor = torch.from_numpy(np.ascontiguousarray(np.asarray(images, dtype=np.uint8).transpose(0, 3, 1, 2)))
    if config.augment == "crop-flip":
        tensor = F.pad(tensor, (config.pad,) * 4)
    return training_program.TrainingData(tensor, torch.from_numpy(np.asarray(labels, dtype=np.int64)), len(labels),
                                    images.shape[1])


@contextlib.contextmanager
def cpu_settings(threads: int):
    """The training program's CPU settings (threads, deterministic algorithms) for the block."""
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    torch.set_num_threads(max(1, threads))
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1], warn_only=before[2])


def train_in_runner(config: dict[str, Any], splits, artifact: Path, hparams: dict[str, Any], work_dir: Path, *,
                    trust: bool, time_limit_s: float, memory_bytes: int, progress, span: tuple[float, float],
                    cancel: threading.Event | None,
                    batch_bounds: tuple[int, int] = DEFAULT_BATCH_BOUNDS) -> tuple[dict[str, Any], float, str]:
    """Train every seed of ``config`` (runner/tracks/training/tasks.py ``harness_config``) on the
    training split of ``splits`` with the optimizer file ``artifact`` in the sandbox; returns (the
    document the training program's ``train`` writes: per seed the curves, plus ``closure``,
    ``evaluations`` and, for seeds on the sample loop, ``samples`` (per seed: samples counted,
    examples scored, steps, the batch sizes as runs of [size, steps], and ``variance_s`` where the
    optimizer wants ``gradient_variance``); wall seconds; sandbox mode). ``batch_bounds``
    (min, max examples) bound what a ``next_batch_size`` optimizer may ask for. Checkpoints go to ``work_dir/scratch``, written
    by this process. Raises EvaluationError: the submission's kinds (from its optimizer server or
    the harness's checks, NOT_FINITE among them), TIMEOUT past ``time_limit_s`` seconds,
    LEASE_EXPIRED when ``cancel`` is set."""
    started = time.monotonic()
    task_config = training_program.TaskConfig(**config)
    checkpoints = Path(work_dir) / "scratch"
    checkpoints.mkdir(exist_ok=True)
    first, last = span

    def report(fraction: float, message: str) -> None:
        progress(first + (last - first) * fraction, message)

    with cpu_settings(task_config.threads):
        harness = RunnerHarness(task_config, training_data(task_config, splits.train_images, splits.train_labels),
                                artifact=artifact, hparams=hparams, work_dir=Path(work_dir), checkpoints=checkpoints,
                                trust=trust, memory_bytes=memory_bytes, deadline=started + time_limit_s,
                                time_limit_s=time_limit_s, cancel=cancel, progress=report,
                                batch_bounds=batch_bounds)
        runs = []
        seeds = task_config.seeds
        try:
            for i, seed in enumerate(seeds):
                runs.append(harness.train_seed(seed, first_fraction=i / len(seeds), span=1 / len(seeds)))
        except ChildError as exc:  # the harness's own checks (not finite), raised in its words
            raise EvaluationError(exc.kind, exc.message) from None
    doc = {"runs": runs, "closure": harness.closure, "hooks": harness.hooks, "evaluations": harness.evaluations,
           "steps_per_epoch": harness.steps_per_epoch, **({"samples": harness.samples} if harness.samples else {})}
    return doc, time.monotonic() - started, harness.sandbox


def bench_in_runner(config: dict[str, Any], splits, work_dir: Path, *, optimizer_file: Path,
                    hparams: dict[str, Any], seconds: float, warmup: int, memory_bytes: int) -> dict[str, Any]:
    """What the training program's ``bench`` reports, for the runner's loop: training items/s of the
    loop here with ``optimizer_file`` in the sandbox, against a pure training step (zero_grad,
    forward, loss, backward, the same optimizer's step in this process) on one batch: ``seconds``
    of each after ``warmup`` untimed steps, in alternating windows (training_program.Harness.bench)."""
    task_config = training_program.TaskConfig(**config)
    (Path(work_dir) / "scratch").mkdir(exist_ok=True)
    with cpu_settings(task_config.threads):
        harness = RunnerHarness(task_config, training_data(task_config, splits.train_images, splits.train_labels),
                                artifact=optimizer_file, hparams=hparams, work_dir=Path(work_dir),
                                checkpoints=Path(work_dir) / "scratch", trust=True, memory_bytes=memory_bytes,
                                deadline=time.monotonic() + 4 * seconds + 600, time_limit_s=4 * seconds + 600,
                                cancel=None, progress=lambda fraction, message: None)
        import importlib.util

        spec = importlib.util.spec_from_file_location("runner_reference_optimizer", optimizer_file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # the platform's own reference file, never a submission

        def pure_side(trained: torch.nn.Module) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
            model = copy.deepcopy(trained)
            return model, module.make_optimizer(model.parameters(), **hparams)

        report = harness.bench(task_config.seeds[0], seconds=seconds, warmup=warmup,
                               windows=training_program.BENCH_WINDOWS, pure_side=pure_side)
    return {**report, "device_name": "cpu", "sandbox": harness.sandbox}
