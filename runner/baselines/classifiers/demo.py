"""The demo's classifier baselines for the boards whose data cannot be downloaded here: CIFAR-10/100
(-C) and the whole ``imagenet`` benchmark (val, A, R, C, GeoDE, Dollar Street).

    python -m runner.baselines.classifiers.demo --data-root var/data --out var/demo-classifiers

1. Writes a fake copy (runner/datasets, labelled synthetic) of every classifier dataset that is
   not under the data root, at the demo's sizes (``DEMO_SIZES``): enough images per region,
   income quartile and corruption cell for intervals that say something. Real data is never
   touched; a model trained here then scores near chance on it, which is the honest outcome.
2. Trains small models for a few seconds each on synthetic images drawn like the fake copies'
   clean patterns (runner.datasets.synth: a colour and a stripe pattern per class), seeded, on
   the CPU. Three capacities, so boards rank them and the progress-gap plot has a spread:
   ``pooled-linear`` (a linear map of the 4×4-pooled image: mostly colour), ``tiny-cnn`` (two
   convolutions: colour and stripes) and ``tiny-cnn-aug`` (the same, trained with noise,
   contrast, brightness and grey-scale jitter: more robust to the stand-in corruptions and to
   the fake ImageNet-R).
3. Exports each as TorchScript (the classifier contract: float32 NCHW in [0, 1] at the task's
   resolution, logits [N, classes]) and writes ``baselines.json`` in the schema of this folder's
   manifest, which ``manage.py seed_baselines --manifest`` submits.

The models are demo material: they learn the fake sets' synthetic patterns and nothing else, and
every result they get is labelled synthetic, as the data is.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from runner import data_files
from runner.datasets import DATASETS, synth
from runner.datasets.cifar import FAKE_BLEND
from runner.datasets.imagenet import fake_val_wnids

# Images per class (or per object × region, topic × region × quartile) of each fake copy the
# demo writes, and for ImageNet-C the classes: enough for intervals per region and per cell.
DEMO_SIZES: dict[str, dict[str, Any]] = {
    "cifar-10-batches-py": {"n_per_class": 20},
    "cifar-100-python": {"n_per_class": 4},
    "CIFAR-10-C": {"n_per_class": 6},
    "CIFAR-100-C": {"n_per_class": 1},
    "imagenet/val": {"n_per_class": 8},
    "imagenet-a": {"n_per_class": 10},
    "imagenet-r": {"n_per_class": 10},
    "imagenet-c": {"n_per_class": 2, "classes": 6},
    "geode": {"n_per_class": 6},
    "dollarstreet": {"n_per_class": 3},
}
IMAGENET_POOL = 8  # the ImageNet models average 8×8 blocks first: 224 → 28, trained at 28


@dataclass(frozen=True)
class Board:
    """One benchmark the demo trains for: its label space and the resolution its models see."""

    benchmark: str
    tasks: tuple[str, ...]
    keys: tuple[int, ...]  # the class keys the fake copies paint (synth.pattern's ``key``)
    classes: int  # logits per image
    side: int  # the side models are trained at (ImageNet: after the 8×8 pooling)


def boards() -> list[Board]:
    index = data_files.imagenet_index()
    imagenet_keys = tuple(sorted(index[w] for w in fake_val_wnids()))
    return [
        Board("cifar10", ("cifar10", "cifar10-c"), tuple(range(10)), 10, 32),
        Board("cifar100", ("cifar100", "cifar100-c"), tuple(range(100)), 100, 32),
        Board("imagenet", ("imagenet-val", "imagenet-a", "imagenet-r", "imagenet-c", "geode", "dollarstreet"),
              imagenet_keys, 1000, 224 // IMAGENET_POOL),
    ]


# --------------------------------------------------------------------------------------------
# 1. The fake copies.
# --------------------------------------------------------------------------------------------
def write_fakes(data_root: Path, *, seed: int = 0) -> dict[str, str]:
    """Write each missing classifier dataset's fake copy; returns ``{name: "real" | "synthetic" |
    "written"}`` for every dataset of DEMO_SIZES.

    Each copy is written under a staging folder and moved into place whole, so a demo stopped
    mid-write leaves no half copy that would pass for present. Raises FileExistsError when a
    dataset's folder exists but is neither usable nor a synthetic copy (it is never deleted)."""
    staging = data_root / ".demo-staging"
    states = {}
    for name, sizes in DEMO_SIZES.items():
        dataset = DATASETS[name]
        if dataset.present(data_root):
            states[name] = "synthetic" if dataset.synthetic(data_root) else "real"
            continue
        target = dataset.path(data_root)
        if target.exists():
            if not dataset.synthetic(data_root):
                raise FileExistsError(f"{target} exists but holds no usable {dataset.title}; move it away")
            shutil.rmtree(target)
        shutil.rmtree(staging, ignore_errors=True)
        dataset.fake(staging, seed=seed, **sizes)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(dataset.path(staging), target)
        states[name] = "written"
    shutil.rmtree(staging, ignore_errors=True)
    return states


# --------------------------------------------------------------------------------------------
# 2. Training.
# --------------------------------------------------------------------------------------------
class PooledLinear(nn.Module):
    """A linear map of the image averaged to 4×4 (48 numbers: colour and coarse layout)."""

    def __init__(self, classes: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.head = nn.Linear(48, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(x - 0.5).flatten(1))


class TinyCNN(nn.Module):
    """``pool`` × ``pool`` averaging (ImageNet only), two 3×3 convolutions (16, 32 channels, each
    with ReLU and 2×2 max pooling), global average pooling, a linear layer."""

    def __init__(self, classes: int, pool: int = 1):
        super().__init__()
        self.pool = nn.AvgPool2d(pool) if pool > 1 else nn.Identity()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.colour = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(32 + 3, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x) - 0.5
        return self.head(torch.cat([self.features(x), self.colour(x).flatten(1)], dim=1))


@dataclass(frozen=True)
class Recipe:
    key: str
    title: str
    description: str
    augment: bool
    epochs: int
    lr: float = 3e-3


RECIPES = (
    Recipe("pooled-linear", "Pooled-colour linear", "a linear map of the image averaged to 4×4 pixels", False, 15,
           1e-2),
    Recipe("tiny-cnn", "Tiny CNN", "two 3×3 convolutions, global average pooling and the mean colour, "
           "linear", False, 12),
    Recipe("tiny-cnn-aug", "Tiny CNN, augmented", "the tiny CNN trained with noise, contrast, brightness "
           "and grey-scale jitter", True, 12),
)


def training_images(board: Board, per_class: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """float32 [N, 3, side, side] in [0, 1] and int64 labels [N]: each class key's pattern, blended
    with another class's as the fake copies' clean images are (cifar.FAKE_BLEND)."""
    images, labels = [], []
    noise = 10.0 if board.side == 32 else 10.0 / IMAGENET_POOL  # pixel noise after the model's pooling
    for key in board.keys:
        for _ in range(per_class):
            image = synth.pattern(key, board.side, board.side, rng, noise=noise)
            images.append(synth.distract(image, FAKE_BLEND, rng, others=board.keys))
            labels.append(key)
    x = np.stack(images).astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    return x, np.asarray(labels, dtype=np.int64)


def jitter(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Noise, contrast, brightness and grey-scale jitter on a random half of the images (the
    augmented recipe); the other half stays clean so the model still learns the clean patterns."""
    n = x.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return (low + (high - low) * torch.rand(n, 1, 1, 1, generator=generator)).to(x.dtype)

    grey = x.mean(dim=1, keepdim=True)
    jittered = grey + (x - grey) * uniform(0.2, 1.0)
    jittered = 0.5 + (jittered - 0.5) * uniform(0.5, 1.0) + uniform(-0.15, 0.15)
    jittered = jittered + uniform(0.0, 0.15) * torch.randn(x.shape, generator=generator)
    keep = torch.rand(n, 1, 1, 1, generator=generator) < 0.5
    return torch.where(keep, x, jittered.clamp(0.0, 1.0))


def train(board: Board, recipe: Recipe, x: np.ndarray, y: np.ndarray, *, seed: int = 0,
          batch_size: int = 64) -> nn.Module:
    """Adam with a cosine schedule, deterministic for a seed; returns the model in eval mode
    (ImageNet models with their 8×8 pooling in front, so they take 224×224 inputs)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    if recipe.key == "pooled-linear":
        model: nn.Module = PooledLinear(board.classes)
    else:
        model = TinyCNN(board.classes)
    inputs, labels = torch.from_numpy(x), torch.from_numpy(y)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=1e-4)
    steps = recipe.epochs * ((len(inputs) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    model.train()
    for _ in range(recipe.epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(inputs), batch_size):
            index = order[start : start + batch_size]
            batch = jitter(inputs[index], generator) if recipe.augment else inputs[index]
            loss = nn.functional.cross_entropy(model(batch), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    if board.side != 32 and isinstance(model, TinyCNN):
        model.pool = nn.AvgPool2d(IMAGENET_POOL)  # PooledLinear's adaptive pooling takes any size as it is
    return model.eval()


# --------------------------------------------------------------------------------------------
# 3. Export and manifest.
# --------------------------------------------------------------------------------------------
def export(model: nn.Module, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(model), str(path))


def build(data_root: Path, out: Path, *, seed: int = 0, per_class: int | None = None) -> dict[str, Any]:
    """Steps 1–3; returns the manifest written to ``out/baselines.json``."""
    started = time.monotonic()
    datasets = write_fakes(data_root, seed=seed)
    faked = time.monotonic()
    torch.set_num_threads(1)  # the demo's site and runner share the machine; one thread trains fastest there
    entries = []
    for board in boards():
        per = per_class or (20 if board.classes == 100 else 80)
        x, y = training_images(board, per, np.random.default_rng(seed + board.classes))
        for recipe in RECIPES:
            model = train(board, recipe, x, y, seed=seed)
            path = out / f"demo-{board.benchmark}-{recipe.key}.pt"
            export(model, path)
            data = path.read_bytes()
            parameters = sum(p.numel() for p in model.parameters())
            entries.append({
                "file": path.name,
                "name": f"{recipe.title} (demo, synthetic training data)",
                "display_name": f"{recipe.title} (demo, synthetic training data)",
                "family": "demo model trained on synthetic images",
                "description": (
                    f"Demo material, not a real {board.benchmark} model: {recipe.description} "
                    f"({parameters:,} parameters), trained by `make demo` for a few seconds on "
                    f"{len(y):,} synthetic images of the fake copies' class patterns (Adam, cosine schedule, "
                    f"{recipe.epochs} epochs, seed {seed}). It has never seen a photograph."
                ),
                "format": "torchscript",
                "benchmark": board.benchmark,
                "tasks": list(board.tasks),
                "hparams": {},
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
                "parameters": parameters,
                "input": f"float32 [N, 3, {32 if board.side == 32 else 224}, same] in [0, 1]",
                "trained_with": f"python -m runner.baselines.classifiers.demo --seed {seed}",
            })
    doc = {
        "schema": 1,
        "about": "The demo's classifier baselines, trained on synthetic images; every result is synthetic.",
        "datasets": datasets,
        "seconds": {"fakes": round(faked - started, 1), "training": round(time.monotonic() - faked, 1)},
        "baselines": entries,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "baselines.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    doc = build(args.data_root, args.out, seed=args.seed)
    for name, state in doc["datasets"].items():
        print(f"{name}: {state}")
    print(f"{len(doc['baselines'])} demo classifiers in {args.out} "
          f"(fakes {doc['seconds']['fakes']} s, training {doc['seconds']['training']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
