"""The digits board's reference classifier: a small CNN trained on the train split of scikit-learn's
digits (the very split runner.datasets scores the test part of), exported as TorchScript and ONNX.

    python -m runner.baselines.classifiers.digits [--out-dir DIR] [--seed 0] [--epochs 60]

Input: float32 [N, 1, 8, 8] in [0, 1] (pixel values / 16, as the digits reader gives them); the
module normalizes itself. Output: logits [N, 10]. Training: Adam, cosine learning rate, random
one-pixel shifts; deterministic on the CPU for a given seed. Writes ``digits_cnn.pt``,
``digits_cnn.onnx`` and, with ``--manifest``, the entries of baselines.json (sha256, size,
parameters and the accuracy the sandboxed runner measures on the test split).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from runner.datasets import digits_split

FOLDER = Path(__file__).parent
TORCHSCRIPT_FILE = "digits_cnn.pt"
ONNX_FILE = "digits_cnn.onnx"
COMMAND = "python -m runner.baselines.classifiers.digits --seed 0 --epochs 60 --manifest"


class DigitsCNN(nn.Module):
    """Three 3×3 convolutions (16, 32, 64 channels, each with batch norm, in eval mode when exported),
    one 2×2 max pool, global average pooling, a linear layer: about 24k parameters."""

    def __init__(self, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features((x - self.mean) / self.std))


def train_split() -> tuple[torch.Tensor, torch.Tensor]:
    """The train split as the runner defines it: float32 [N, 1, 8, 8] in [0, 1], labels [N]."""
    images, labels, _, _ = digits_split()
    x = torch.from_numpy(images.astype(np.float32) / np.float32(16.0)).unsqueeze(1)
    return x, torch.from_numpy(labels)


def shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image moved by up to one pixel in each direction (zeros come in)."""
    padded = nn.functional.pad(x, (1, 1, 1, 1))
    dy, dx = torch.randint(0, 3, (2, x.shape[0]), generator=generator)
    rows = (torch.arange(8)[None, :] + dy[:, None])[:, None, :, None].expand(-1, 1, 8, 10)
    cropped = padded.gather(2, rows)
    cols = (torch.arange(8)[None, :] + dx[:, None])[:, None, None, :].expand(-1, 1, 8, 8)
    return cropped.gather(3, cols)


def train(seed: int = 0, epochs: int = 60, batch_size: int = 64, lr: float = 3e-3) -> DigitsCNN:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    x, y = train_split()
    model = DigitsCNN(float(x.mean()), float(x.std()))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(model(shift(x[index], generator)), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def export(model: DigitsCNN, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    script_path, onnx_path = out_dir / TORCHSCRIPT_FILE, out_dir / ONNX_FILE
    torch.jit.save(torch.jit.script(model), str(script_path))
    example = torch.rand(4, 1, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
        torch.onnx.export(
            model,
            (example,),
            str(onnx_path),
            dynamo=False,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "n"}, "logits": {0: "n"}},
            opset_version=17,
        )
    return script_path, onnx_path


def manifest_entries(
    out_dir: Path, model: DigitsCNN, scores: dict[str, dict[str, float]]
) -> list[dict[str, Any]]:
    parameters = sum(p.numel() for p in model.parameters())
    entries = []
    for file, fmt, label in ((TORCHSCRIPT_FILE, "torchscript", "TorchScript"), (ONNX_FILE, "onnx", "ONNX")):
        data = (out_dir / file).read_bytes()
        entries.append(
            {
                "file": file,
                "name": f"Small CNN ({label})",
                "display_name": f"Small CNN ({label})",
                "family": "reference classifier",
                "description": f"Three 3×3 convolutions, max pool, global average pool, linear "
                f"({parameters:,} parameters), trained on the digits train split (Adam, cosine "
                f"schedule, one-pixel shifts, seed 0); {label} export.",
                "format": fmt,
                "benchmark": "digits",
                "tasks": ["digits"],
                "hparams": {},
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
                "parameters": parameters,
                "input": "float32 [N, 1, 8, 8] in [0, 1] (pixel / 16); normalization inside the model",
                "expected_metrics": {"digits": scores[file]},
                "trained_with": COMMAND,
            }
        )
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", type=Path, default=FOLDER)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument(
        "--manifest",
        action="store_true",
        help="score both files in the sandbox and write baselines.json beside them",
    )
    args = parser.parse_args(argv)
    model = train(args.seed, args.epochs)
    paths = export(model, args.out_dir)
    for path in paths:
        print(f"{path}: {path.stat().st_size:,} bytes")
    if args.manifest:
        from runner.evaluate import evaluate, local_job_spec

        scores = {}
        for path in paths:
            result = evaluate(local_job_spec("digits", path), path, data_root=args.out_dir)
            scores[path.name] = {k: round(v, 4) for k, v in result["metrics"].items()}
            print(f"{path.name}: {scores[path.name]}")
        doc = {
            "schema": 1,
            "about": "Reference classifiers the site submits as baselines. Each file is an ordinary "
            "classifier submission (the artifact contract of shared/DESIGN.md); 'expected_metrics' is "
            "what the sandboxed runner scored when the file was made.",
            "baselines": manifest_entries(args.out_dir, model, scores),
        }
        (args.out_dir / "baselines.json").write_text(
            json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
