"""The sandboxed training program of the optimizer training tasks on CUDA: ``python -I training.py
train|bench ...`` trains the platform's model with a submitted optimizer, the whole loop inside the
sandbox. (On the CPU the runner owns the loop, runner/tracks/training/loop.py, and reuses this
module's harness, models and data helpers.)

It runs inside the sandbox with exactly this beside it: ``optimizer_loader.py`` and ``rules.py``
(runner/sandboxed/, bound by :func:`runner.sandboxed.stage`), the submission, and the job's input
folder written by the trusted parent: ``task.json`` (model, budget, seeds, standardization) and
``train_images.npy`` / ``train_labels.npy``, the training split only. The test split never
enters the sandbox. Standard library, numpy, torch and safetensors only.

``train``, for each seed:
1. seed torch (every device) and a CPU generator that draws the data order and augmentation;
2. build the platform's model on the CPU (the same initial weights on every device), move it;
3. execute the submission afresh (nothing carries over between seeds) and call
   ``make_optimizer(model.parameters(), **hparams)``;
4. per epoch: a seeded permutation, full batches only (the remainder changes every epoch);
   per batch: gather from the device-resident data, augment (CIFAR: 4-pad random crop and
   horizontal flip), standardize per channel, forward (CUDA: bf16 autocast, channels_last),
   cross-entropy, ``zero_grad``, backward, ``step``; the loss is kept on the device;
5. at the end of each epoch: check every loss of the epoch is finite (else NOT_FINITE naming
   the epoch and step), write the weights to ``<scratch>/ckpt_s<seed>_e<epoch>.safetensors``,
   report progress as ``@progress <fraction> <message>`` lines.
It writes ``out.json`` with, per seed and epoch, the mean training loss and the training seconds
so far (checkpoint writing excluded). The parent evaluates every checkpoint on the test split and
computes every metric; it reads nothing else from here but these curves.

``bench``: one seed; the harness loop above for a time budget, then a pure training step
(zero_grad, forward, loss, backward, step) on one device-resident batch for the same budget, with
the same model, optimizer and device; warm-up steps are left out of both timings.

One piece past 450 lines: the models, the data handling and the loop are what the runner's own
loop on the CPU reuses too (runner/tracks/training/loop.py), so that both train the same way.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if __package__:  # imported by the runner, for the harness and the model definitions
    from runner.sandboxed import optimizer_loader as loader
    from runner.sandboxed import rules
else:  # in the sandbox: optimizer_loader.py and rules.py are bound beside this file
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import optimizer_loader as loader
    import rules

ChildError = rules.ChildError
CLOCK = time.perf_counter  # taken before any submitted code runs: a patched time module cannot fake it

TASK_FILE = "task.json"
TRAIN_IMAGES = "train_images.npy"
TRAIN_LABELS = "train_labels.npy"
OUT_FILE = "out.json"
BENCH_WINDOWS = 6  # runner bench: harness and pure-step windows, alternating
CUBLAS_WORKSPACE = ":4096:8"  # what deterministic cuBLAS needs (set before CUDA starts)


def checkpoint_name(seed: int, epoch: int) -> str:
    return f"ckpt_s{seed}_e{epoch:03d}.safetensors"


def batch_and_steps(size: int, batch_size: int) -> tuple[int, int]:
    """(items per batch, steps per epoch) for a split of ``size`` items: full batches only (the
    remainder is left out, a different one each epoch); a split smaller than a batch is one batch."""
    batch = max(1, min(batch_size, size))
    return batch, max(1, size // batch)


def uses_bf16(precision: str, device_type: str) -> bool:
    """``auto``: bf16 autocast and channels_last on CUDA, float32 elsewhere."""
    return precision == "bf16" or (precision == "auto" and device_type == "cuda")


def precision_label(bf16: bool) -> str:
    return "bf16 autocast, channels_last" if bf16 else "float32"


# --------------------------------------------------------------------------------------------
# The platform's models. Both end in a plain mean over space: AdaptiveAvgPool2d has no
# deterministic CUDA backward.
# --------------------------------------------------------------------------------------------
class DigitsCNN(nn.Module):
    """A small CNN for 8×8 digits: three 3×3 conv + BN + ReLU layers (16, 32, 64 channels), two
    2×2 max-pools, a linear classifier on the 64×2×2 features (about 26k parameters)."""

    def __init__(self, num_classes: int = 10, channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(64 * 2 * 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class BasicBlock(nn.Module):
    def __init__(self, inputs: int, outputs: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.shortcut = nn.Sequential()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet18(nn.Module):
    """ResNet-18 with the CIFAR stem (3×3 conv, stride 1, no max-pool), blocks [2, 2, 2, 2] of
    64–512 channels, global mean pool, linear classifier (about 11.2M parameters)."""

    def __init__(self, num_classes: int = 10, channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, width = [], 64
        for outputs, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(BasicBlock(width, outputs, stride), BasicBlock(outputs, outputs, 1)))
            width = outputs
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(out.mean(dim=(2, 3)))


class DecoderBlock(nn.Module):
    """One pre-LN decoder block: x + attn(LN(x)), then x + MLP(LN(x)); causal multi-head
    self-attention (fused q, k, v projection; torch's scaled_dot_product_attention), MLP 4× GELU."""

    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.out = nn.Linear(4 * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(attended.transpose(1, 2).reshape(b, t, d))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class ByteTransformer(nn.Module):
    """The byte-level language model of ``opt-text-transformer`` (shared/PROTOCOLS.md, "Small
    transformer on 2 CPU cores"): token and learned position embeddings (vocabulary 256 bytes,
    context 128, d 128), 4 pre-LN decoder blocks of 4 heads, a final LayerNorm and an untied
    linear head with bias; no dropout; 875,520 parameters. Input: int64 bytes [B, T ≤ 128];
    output: logits [B, T, 256], position t predicting byte t + 1. Initialization: PyTorch's own
    for each layer (nn.Embedding N(0, 1); nn.Linear Kaiming-uniform weights and uniform biases;
    LayerNorm 1 and 0), the initialization PROTOCOLS' measured figures were taken with. GPT-2's
    (normal, std 0.02) was tried here and left: it starves SGD of signal — at step 300 of 800,
    SGD with clipping (lr 10) stood at 5.0 bits per byte against 3.2 with these defaults.
    ``num_classes`` is the vocabulary; ``channels`` is ignored (bytes have none)."""

    def __init__(self, num_classes: int = 256, channels: int = 0, *, d_model: int = 128, layers: int = 4,
                 heads: int = 4, context: int = 128):
        super().__init__()
        self.context = context
        self.tokens = nn.Embedding(num_classes, d_model)
        self.positions = nn.Embedding(context, d_model)
        self.blocks = nn.ModuleList(DecoderBlock(d_model, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        if t > self.context:
            raise ValueError(f"{t} bytes in a window; the context is {self.context}")
        h = self.tokens(x) + self.positions(torch.arange(t, device=x.device))
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln(h))


MODELS: dict[str, Callable[..., nn.Module]] = {"digits-cnn": DigitsCNN, "cifar-resnet18": CifarResNet18,
                                               "byte-transformer": ByteTransformer}


def build_model(name: str, num_classes: int, channels: int, seed: int) -> nn.Module:
    """The model with the initial weights of ``seed``, built on the CPU (so every device starts
    from the same weights), leaving the caller's random state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[name](num_classes=num_classes, channels=channels)


def state_for_saving(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as contiguous CPU tensors (safetensors wants contiguous; channels_last
    weights are not), float32 for floating tensors."""
    out = {}
    for key, value in model.state_dict().items():
        tensor = value.detach().to("cpu")
        if tensor.is_floating_point():
            tensor = tensor.float()
        out[key] = tensor.contiguous()
    return out


# --------------------------------------------------------------------------------------------
# Data on the device: standardization and augmentation (shared with the parent's evaluation).
# --------------------------------------------------------------------------------------------
def channel_stats(mean: list[float], std: list[float], device: torch.device | str) -> tuple[torch.Tensor, ...]:
    """Mean and std as float32 [1, C, 1, 1] tensors on the device (made once: a copy per batch
    from host memory would stall the GPU queue)."""
    shape = (1, len(mean), 1, 1)
    return tuple(torch.tensor(v, dtype=torch.float32).view(shape).to(device) for v in (mean, std))


def standardize(images: torch.Tensor, divisor: float, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW → float32 NCHW: x / divisor, then per channel (x − mean) / std."""
    return images.float().div_(divisor).sub_(mean).div_(std)


def crop_flip(padded: torch.Tensor, index: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor,
              flip: torch.Tensor, size: int) -> torch.Tensor:
    """Random crops of ``size`` from zero-padded uint8 NCHW images at offsets (dy, dx), mirrored
    where ``flip``: one gather on the device (forward only, so deterministic)."""
    span = torch.arange(size, device=padded.device)
    rows = dy[:, None] + span
    cols = dx[:, None] + torch.where(flip[:, None], size - 1 - span, span)
    channel = torch.arange(padded.shape[1], device=padded.device)
    return padded[index[:, None, None, None], channel[None, :, None, None], rows[:, None, :, None],
                  cols[:, None, None, :]]


@dataclass
class TaskConfig:
    model: str
    num_classes: int
    epochs: int
    batch_size: int
    seeds: list[int]
    mean: list[float]
    std: list[float]
    divisor: float
    augment: str = "none"  # or "crop-flip"
    pad: int = 4
    precision: str = "auto"  # auto: bf16 autocast + channels_last on CUDA, float32 on the CPU
    threads: int = 1

    @classmethod
    def read(cls, path: str) -> TaskConfig:
        with open(path) as fh:
            return cls(**json.load(fh))


@dataclass
class TrainingData:
    """The training split on the device: uint8 NCHW (zero-padded when augmenting) and labels."""

    images: torch.Tensor
    labels: torch.Tensor
    size: int
    image_size: int


def load_training_data(folder: str, config: TaskConfig, device: torch.device) -> TrainingData:
    images = np.load(os.path.join(folder, TRAIN_IMAGES), allow_pickle=False)  # uint8 NHWC
    labels = np.load(os.path.join(folder, TRAIN_LABELS), allow_pickle=False)
    tensor = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device)
    if config.augment == "crop-flip":
        tensor = F.pad(tensor, (config.pad,) * 4)
    return TrainingData(tensor, torch.from_numpy(labels.astype(np.int64)).to(device), len(labels),
                        images.shape[1])


# --------------------------------------------------------------------------------------------
# The harness.
# --------------------------------------------------------------------------------------------
@dataclass
class BenchClock:
    """Times the harness loop: ``warmup`` untimed steps, then ``seconds`` of timed ones in windows
    of ``window`` seconds; after each window ``between(elapsed)`` runs (the pure step for as long,
    so both sides of the ratio see the same load: :meth:`Harness.bench`) outside the timed
    intervals. ``window`` 0: one window, nothing between."""

    warmup: int
    seconds: float
    steps: int = 0
    timed_steps: int = 0
    items: int = 0
    started: float = 0.0
    elapsed: float = 0.0
    windows: int = 0
    sync: Callable[[], None] = field(default=lambda: None)
    window: float = 0.0
    between: Callable[[float], None] = field(default=lambda seconds: None)

    def start(self) -> None:
        self.sync()
        self.started = CLOCK()

    def tick(self, items: int) -> bool:
        """Count one finished step; True when the budget is spent."""
        self.steps += 1
        if self.steps <= self.warmup:
            if self.steps == self.warmup:
                self.start()
            return False
        self.timed_steps += 1
        self.items += items
        now = CLOCK()
        if now - self.started < min(self.window or self.seconds, self.seconds - self.elapsed):
            return False
        self.sync()
        spent = CLOCK() - self.started
        self.elapsed += spent
        self.windows += 1
        if self.window:
            self.between(spent)
        self.start()
        return self.elapsed >= self.seconds


@dataclass
class PureStep:
    """The yardstick of ``runner bench``: zero_grad, forward, loss, backward and the optimizer's
    step on one batch already on the device, in this process, with no data pipeline, no checks
    and no IPC. ``steps`` and ``seconds`` accumulate over :meth:`run_for` calls."""

    one: Callable[[], None]
    sync: Callable[[], None]
    steps: int = 0
    seconds: float = 0.0

    def run_for(self, seconds: float) -> None:
        """Run whole steps until at least ``seconds`` (wall clock, device synchronized) passed."""
        self.sync()
        started = CLOCK()
        while True:
            self.one()
            self.steps += 1
            if CLOCK() - started >= seconds:
                break
        self.sync()
        self.seconds += CLOCK() - started


class Harness:
    def __init__(self, config: TaskConfig, data: TrainingData, device: torch.device, source_path: str,
                 hparams: dict[str, Any], scratch: str, progress: Callable[[float, str], None]):
        self.config = config
        self.data = data
        self.device = device
        self.filename = source_path
        self.code = loader.compile_source(loader.load_source(source_path), source_path)
        self.hparams = hparams
        self.scratch = scratch
        self.progress = progress
        self.cuda = device.type == "cuda"
        self.mixed = uses_bf16(config.precision, device.type)
        self.memory_format = torch.channels_last if self.mixed else torch.contiguous_format
        self.batch, self.steps_per_epoch = batch_and_steps(data.size, config.batch_size)
        self.mean, self.std = channel_stats(config.mean, config.std, device)
        self.standardized = None
        if config.augment != "crop-flip":  # nothing random per batch: standardize once
            self.standardized = standardize(data.images, config.divisor, self.mean, self.std)

    @property
    def precision(self) -> str:
        return precision_label(self.mixed)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def new_run(self, seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        channels = self.data.images.shape[1]
        model = build_model(self.config.model, self.config.num_classes, channels, seed)
        model = model.to(self.device, memory_format=self.memory_format)
        model.train()
        torch.manual_seed(seed)  # the submission's own randomness, on every device
        module = loader.exec_module(self.code, self.filename)
        optimizer = loader.make_user_optimizer(module, list(model.parameters()), self.hparams, self.filename)
        return model, optimizer

    def epoch_plan(self, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """The epoch's order and augmentation draws, made on the CPU (the same on every device)."""
        n = self.data.size
        order = torch.randperm(n, generator=generator)
        if self.config.augment != "crop-flip":
            return (order.to(self.device),)
        reach = 2 * self.config.pad + 1
        dy = torch.randint(0, reach, (n,), generator=generator)
        dx = torch.randint(0, reach, (n,), generator=generator)
        flip = torch.randint(0, 2, (n,), generator=generator).bool()
        return tuple(t.to(self.device) for t in (order, dy, dx, flip))

    def inputs(self, plan: tuple[torch.Tensor, ...], start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = plan[0][start:stop]
        if self.standardized is not None:
            x = self.standardized[index]
        else:
            dy, dx, flip = (t[start:stop] for t in plan[1:])
            crops = crop_flip(self.data.images, index, dy, dx, flip, self.data.image_size)
            x = standardize(crops, self.config.divisor, self.mean, self.std)
        return x.contiguous(memory_format=self.memory_format), self.data.labels[index]

    def loss_of(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.mixed):
            return F.cross_entropy(model(x), y)

    def step(self, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
             where: str) -> torch.Tensor:
        loader.call_user(f"optimizer.zero_grad() at {where}", optimizer.zero_grad, self.filename)
        try:
            loss = self.loss_of(model, x, y)
            loss.backward()
        except Exception as exc:  # after the first step, the optimizer is what changed the model
            raise ChildError(rules.kind_of_exception(exc), f"the training step failed at {where}: "
                             f"{type(exc).__name__}: {exc}. The optimizer must update the parameters in "
                             "place, keeping their shape, dtype and device") from exc
        loader.call_user(f"optimizer.step() at {where}", optimizer.step, self.filename)
        return loss.detach()

    def train_seed(self, seed: int, *, first_fraction: float = 0.0, span: float = 1.0,
                   clock: BenchClock | None = None) -> dict[str, Any]:
        """Train one seed for the budget (or until ``clock`` stops it); returns its curves."""
        model, optimizer = self.new_run(seed)
        self.model, self.optimizer = model, optimizer
        generator = torch.Generator().manual_seed(seed)
        epochs = self.config.epochs if clock is None else 1 << 30
        steps = self.steps_per_epoch
        losses = torch.zeros(steps, device=self.device)
        if clock is not None and clock.warmup == 0:
            clock.start()
        curve: dict[str, list[float]] = {"train_loss": [], "seconds": []}
        trained = 0.0
        report_every = max(1, steps // 4)
        for epoch in range(1, epochs + 1):
            self.sync()
            started = CLOCK()
            plan = self.epoch_plan(generator)
            losses.zero_()
            for s in range(steps):
                where = f"epoch {epoch}, step {s + 1} of {steps} (seed {seed})"
                x, y = self.inputs(plan, s * self.batch, (s + 1) * self.batch)
                try:
                    losses[s] = self.step(model, optimizer, x, y, where)
                except ChildError as exc:
                    self.raise_if_not_finite(losses[:s], epoch, seed, exc)
                    raise
                if clock is not None and clock.tick(self.batch):
                    return {"seed": seed, **curve}
                if clock is None and (s + 1) % report_every == 0 and s + 1 < steps:
                    done = ((epoch - 1) * steps + s + 1) / (self.config.epochs * steps)
                    self.progress(first_fraction + span * done, f"seed {seed}, epoch {epoch}, step {s + 1}")
            self.sync()
            trained += CLOCK() - started
            self.raise_if_not_finite(losses, epoch, seed)
            mean_loss = float(losses.double().mean())
            curve["train_loss"].append(mean_loss)
            curve["seconds"].append(trained)
            self.save_checkpoint(model, seed, epoch)
            if clock is None:
                self.progress(first_fraction + span * epoch / self.config.epochs,
                              f"seed {seed}, epoch {epoch}/{self.config.epochs}, train loss {mean_loss:.4f}")
        return {"seed": seed, **curve}

    def raise_if_not_finite(self, losses: torch.Tensor, epoch: int, seed: int,
                            cause: ChildError | None = None) -> None:
        values = losses.detach().float().cpu()
        bad = torch.nonzero(~torch.isfinite(values)).flatten()
        if not len(bad):
            return
        step = int(bad[0]) + 1
        then = f" (then: {cause.message})" if cause is not None else ""
        raise ChildError(rules.NOT_FINITE, f"the training loss became {float(values[step - 1])} at epoch "
                         f"{epoch}, step {step} of {self.steps_per_epoch} (seed {seed}): the update before it "
                         f"left the weights NaN or infinite; lower the learning rate or guard the update{then}")

    def save_checkpoint(self, model: nn.Module, seed: int, epoch: int) -> None:
        from safetensors.torch import save_file

        state = state_for_saving(model)
        for key, tensor in state.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ChildError(rules.NOT_FINITE, f"after epoch {epoch} (seed {seed}) the weights {key} hold "
                                 "NaN or infinity: lower the learning rate or guard the update")
        save_file(state, os.path.join(self.scratch, checkpoint_name(seed, epoch)))

    def pure_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, warmup: int) -> PureStep:
        """A :class:`PureStep` of ``model`` and ``optimizer`` on the first batch of seed 0's order,
        after ``warmup`` untimed steps."""
        plan = self.epoch_plan(torch.Generator().manual_seed(0))
        x, y = self.inputs(plan, 0, self.batch)
        x, y = x.clone(), y.clone()

        def one() -> None:
            optimizer.zero_grad()
            self.loss_of(model, x, y).backward()
            optimizer.step()

        for _ in range(warmup):
            one()
        return PureStep(one, self.sync)

    def bench(self, seed: int, *, seconds: float, warmup: int, windows: int,
              pure_side: Callable[[nn.Module], tuple[nn.Module, torch.optim.Optimizer]]) -> dict[str, Any]:
        """Training items/s of this harness's loop against a pure step, interleaved: ``seconds``
        of timed harness steps in ``windows`` windows, each followed by a pure-step window as long
        (``pure_side(trained model)`` gives the pure step's own model and optimizer, made at the
        first window), so a change of the host's load in between hits both sides of the ratio.
        Returns the figures of :class:`runner.tracks.training.launch.BenchReport`."""
        pure: list[PureStep] = []

        def between(spent: float) -> None:
            if not pure:
                pure.append(self.pure_step(*pure_side(self.model), warmup))
            pure[0].run_for(spent)

        clock = BenchClock(warmup=warmup, seconds=seconds, sync=self.sync, window=seconds / max(1, windows),
                           between=between)
        self.train_seed(seed, clock=clock)
        train_rate = clock.items / clock.elapsed if clock.elapsed else 0.0
        side = pure[0] if pure else PureStep(lambda: None, self.sync)
        pure_rate = side.steps * self.batch / side.seconds if side.seconds else 0.0
        return {"train_items_per_s": train_rate, "pure_step_items_per_s": pure_rate,
                "ratio": train_rate / pure_rate if pure_rate else 0.0, "harness_steps": clock.timed_steps,
                "harness_s": clock.elapsed, "pure_steps": side.steps, "pure_s": side.seconds,
                "warmup_steps": warmup, "windows": clock.windows, "batch_size": self.batch,
                "steps_per_epoch": self.steps_per_epoch, "precision": self.precision,
                "threads": torch.get_num_threads(), "torch": torch.__version__}


def make_harness(args: argparse.Namespace) -> Harness:
    config = TaskConfig.read(os.path.join(args.data, TASK_FILE))
    torch.set_num_threads(max(1, config.threads))
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    # warn_only: a submission may use an op without a deterministic kernel; it still runs.
    torch.use_deterministic_algorithms(True, warn_only=True)
    data = load_training_data(args.data, config, device)
    hparams = loader.parse_hparams(args.hparams)
    return Harness(config, data, device, args.source, hparams, os.path.dirname(os.path.abspath(args.out)),
                   loader.report_progress)


def _cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    harness = make_harness(args)
    seeds = harness.config.seeds
    runs = []
    for i, seed in enumerate(seeds):
        runs.append(harness.train_seed(seed, first_fraction=i / len(seeds), span=1 / len(seeds)))
    return {"runs": runs, "precision": harness.precision, "threads": torch.get_num_threads(),
            "steps_per_epoch": harness.steps_per_epoch, "batch_size": harness.batch,
            "items_per_epoch": harness.steps_per_epoch * harness.batch, "torch": torch.__version__,
            "device_name": torch.cuda.get_device_name(harness.device) if harness.cuda else "cpu"}


def _cmd_bench(args: argparse.Namespace) -> dict[str, Any]:
    harness = make_harness(args)

    def pure_side(trained: nn.Module) -> tuple[nn.Module, torch.optim.Optimizer]:
        model = copy.deepcopy(trained)
        module = loader.exec_module(harness.code, harness.filename)
        return model, loader.make_user_optimizer(module, list(model.parameters()), harness.hparams, harness.filename)

    report = harness.bench(harness.config.seeds[0], seconds=args.seconds, warmup=args.warmup,
                           windows=BENCH_WINDOWS, pure_side=pure_side)
    return {**report, "device_name": torch.cuda.get_device_name(harness.device) if harness.cuda else "cpu"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="training.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, run in (("train", _cmd_train), ("bench", _cmd_bench)):
        p = sub.add_parser(name)
        p.add_argument("--source", required=True, help="the submitted Python file")
        p.add_argument("--hparams", default="{}", help="a JSON object of keyword arguments for make_optimizer")
        p.add_argument("--data", required=True, help="the input folder: task.json and the training split")
        p.add_argument("--device", default="cpu")
        p.add_argument("--out", required=True, help="the JSON document to write; checkpoints go beside it")
        p.set_defaults(run=run)
        if name == "bench":
            p.add_argument("--seconds", type=float, default=5.0, help="timed seconds of each of the two loops")
            p.add_argument("--warmup", type=int, default=5, help="untimed steps before each timing (0 or more)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        doc = {"ok": True, **args.run(args)}
    except ChildError as exc:
        doc = {"ok": False, "error": exc.doc()}
        print(f"{exc.kind}: {exc.message}", file=sys.stderr)
    except Exception as exc:  # the harness's own work (data, model, checkpoints) ran out of memory
        if not rules.is_out_of_memory(exc):
            raise
        where = "device memory" if type(exc).__name__ == "OutOfMemoryError" else "memory"
        message = f"ran out of {where}: {(str(exc).splitlines() or [type(exc).__name__])[0]}"
        doc = {"ok": False, "error": rules.ChildError(rules.OUT_OF_MEMORY, message).doc()}
        print(f"{rules.OUT_OF_MEMORY}: {message}", file=sys.stderr)
    loader.write_doc(args.out, doc)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # threads or atexit handlers the submission left behind do not delay the exit
