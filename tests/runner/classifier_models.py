"""Classifier submissions for the runner's tests, as a researcher would export them: tiny models
whose logits are a known function of the pixels, so every metric can be recomputed by hand.

``ColourClassifier``: logits_c = −100·‖mean RGB of the image − 0.75·colour_c‖², where colour_c is
the class colour the fake datasets paint with (runner.datasets.synth.class_style; the fake
images are stripes between 0.5 and 1.0 times that colour, so 0.75 is their mean). 10 classes
for CIFAR, 1,000 for the ImageNet family.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import torch

from runner.datasets import synth


def class_colours(classes: int) -> np.ndarray:
    return np.stack([synth.class_style(c)[0] for c in range(classes)]).astype(np.float32) / 255.0


class ColourClassifier(torch.nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        self.register_buffer("colours", torch.from_numpy(0.75 * class_colours(classes)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3))
        return -100.0 * ((mean[:, None, :] - self.colours[None, :, :]) ** 2).sum(-1)


class WrongShape(torch.nn.Module):
    """Logits for 7 classes where the task has 10."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :7]


class NaNAfterFirst(torch.nn.Module):
    """Finite logits for the first image of each batch, NaN for the rest."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = x.flatten(1)[:, :10].clone()
        logits[1:] = float("nan")
        return logits


class FakeOutOfMemory(torch.nn.Module):
    """Raises an out-of-memory error for batches above ``limit`` images (as a GPU would)."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.limit:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB (fake)")
        return x.flatten(1)[:, :10] * 16.0


class DigitsConvNet(torch.nn.Module):
    """A small convolutional classifier for digits' [N, 1, 8, 8] input, with BatchNorm (seeded
    weights; BatchNorm's running statistics left at their initial 0 and 1)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.norm = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8 * 64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(self.conv(x)).relu().flatten(1))


class DropoutLeftOn(torch.nn.Module):
    """A linear classifier with Dropout, for export in training mode (random logits)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.drop = torch.nn.Dropout(0.5)
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(x.flatten(1)))


class Prototypes(torch.nn.Module):
    """Logits = −distance to 10 class prototypes (torch.cdist: no float16 kernel on CPU)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.prototypes = torch.nn.Parameter(torch.rand(10, 64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -torch.cdist(x.flatten(1), self.prototypes)


class Float64Logits(torch.nn.Module):
    """A linear classifier whose logits come back as float64."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)).double()


class IntegerLogits(Float64Logits):
    """Logits rounded to integers (int64)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (100 * self.fc(x.flatten(1))).round().long()


class TakesBytes(torch.nn.Module):
    """A linear classifier that takes uint8 pixels (0..255) and converts them itself."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.float().flatten(1) / 255.0)


def _example(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    if dtype.is_floating_point:
        return torch.rand(*shape).to(dtype)
    return (torch.rand(*shape) * 255).to(dtype)


def save_traced(module: torch.nn.Module, path: Path, shape: tuple[int, ...], batch: int = 16) -> Path:
    """``torch.jit.trace`` as the module is (training mode left as the caller set it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(module, torch.rand(batch, *shape)), str(path))
    return path


def save_onnx_as_exported(
    module: torch.nn.Module, path: Path, shape: tuple[int, ...], *, dynamic: dict | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """``torch.onnx.export`` with the example input's shape (``shape`` includes the batch) fixed
    except the ``dynamic`` axes ({input name: {axis: name}}): the export most tutorials show."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (_example(shape, dtype),),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes=dynamic,
            opset_version=17,
        )
    return path


def save_pt2_as_exported(
    module: torch.nn.Module, path: Path, shape: tuple[int, ...], *, dynamic: dict | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """``torch.export.export`` with the example input's shape fixed except the ``dynamic``
    dimensions ({axis: Dim}); ``dtype`` the example's (torch.float16 for a .half() module)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    program = torch.export.export(
        module.eval(), (_example(shape, dtype),), dynamic_shapes=(dynamic,) if dynamic else None
    )
    torch.export.save(program, str(path))
    return path


def save_torchscript(module: torch.nn.Module, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(module.eval()), str(path))
    return path


def save_onnx(module: torch.nn.Module, path: Path, shape: tuple[int, ...]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (torch.rand(2, *shape),),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
            opset_version=17,
        )
    return path


def save_pt2(module: torch.nn.Module, path: Path, shape: tuple[int, ...]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    program = torch.export.export(
        module.eval(), (torch.rand(2, *shape),), dynamic_shapes=({0: torch.export.Dim("n", min=1)},)
    )
    torch.export.save(program, str(path))
    return path


def save_pickle(path: Path) -> Path:
    path.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
    return path


def save_checkpoint(module: torch.nn.Module, path: Path) -> Path:
    torch.save(module.state_dict(), str(path))
    return path
