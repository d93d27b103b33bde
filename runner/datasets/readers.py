"""The three readers: resident arrays (CIFAR, digits), -C arrays in severity blocks (CIFAR-10-C,
CIFAR-100-C) and image files (ImageNet family, GeoDE, Dollar Street). Each yields batches in its
item order and keeps the targets to itself."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runner.datasets.base import Batch, Reader, Targets
from runner.datasets.images import BatchDecoder, cuda_requested


def _uint8_to_float(batch: np.ndarray, divisor: float) -> np.ndarray:
    """uint8 NHWC → float32 NCHW in [0, 1]."""
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(divisor)


class ArrayReader(Reader):
    """Images held in memory as uint8 NHWC (CIFAR: 0–255; digits: 0–16, ``divisor`` 16)."""

    def __init__(
        self,
        name: str,
        images: np.ndarray,
        targets: Targets,
        env: dict[str, Any],
        *,
        ids: list[str] | None = None,
        divisor: float = 255.0,
    ):
        if images.ndim != 4:
            raise ValueError("images must be NHWC")
        self.name = name
        self.images = images
        self.size = len(images)
        self.targets = targets
        self.env = env
        self.ids = ids if ids is not None else [str(i) for i in range(self.size)]
        self.divisor = divisor

    def batches(self, batch_size: int = 256, *, workers: int = 0, device: str = "cpu") -> Iterator[Batch]:
        on_gpu = cuda_requested(device)
        if on_gpu:
            # CIFAR-scale data lives on the device: one upload, then slices.
            import torch

            resident = torch.from_numpy(np.ascontiguousarray(self.images)).to(device)
        for start in range(0, self.size, batch_size):
            stop = min(start + batch_size, self.size)
            if on_gpu:
                inputs = resident[start:stop].permute(0, 3, 1, 2).float().div_(self.divisor).contiguous()
            else:
                inputs = _uint8_to_float(self.images[start:stop], self.divisor)
            yield Batch(inputs, np.arange(start, stop, dtype=np.int64), self.ids[start:stop])


@dataclass
class ArrayBlock:
    """One (corruption, severity) set of a -C array file: rows [start, stop) of ``path``."""

    path: Path
    start: int
    stop: int
    group: dict[str, Any] = field(default_factory=dict)


class CorruptionArrayReader(Reader):
    """CIFAR-10-C / CIFAR-100-C: each block is one corruption at one severity, memory-mapped."""

    def __init__(self, name: str, blocks: list[ArrayBlock], targets: Targets, env: dict[str, Any]):
        self.name = name
        self.blocks = blocks
        self.size = sum(b.stop - b.start for b in blocks)
        self.targets = targets
        self.env = env

    def batches(self, batch_size: int = 256, *, workers: int = 0, device: str = "cpu") -> Iterator[Batch]:
        on_gpu = cuda_requested(device)
        position = 0
        arrays: dict[Path, np.ndarray] = {}
        for block in self.blocks:
            if block.path not in arrays:
                arrays.clear()  # one corruption file mapped at a time
                arrays[block.path] = np.load(block.path, mmap_mode="r")
            data = arrays[block.path]
            tag = f"{block.group['corruption']}/{block.group['severity']}/"
            for start in range(block.start, block.stop, batch_size):
                stop = min(start + batch_size, block.stop)
                chunk = np.asarray(data[start:stop])
                if on_gpu:
                    import torch

                    inputs = (
                        torch.from_numpy(chunk)
                        .to(device)
                        .permute(0, 3, 1, 2)
                        .float()
                        .div_(255.0)
                        .contiguous()
                    )
                else:
                    inputs = _uint8_to_float(chunk, 255.0)
                count = stop - start
                index = np.arange(position, position + count, dtype=np.int64)
                ids = [f"{tag}{row - block.start}" for row in range(start, stop)]
                yield Batch(inputs, index, ids, dict(block.group))
                position += count


@dataclass
class ImageSet:
    """Files under ``root`` at ``relpaths`` (one ImageNet-C corruption/severity, or a whole tree)."""

    root: Path
    relpaths: list[str]
    group: dict[str, Any] = field(default_factory=dict)
    id_prefix: str = ""


class ImageFileReader(Reader):
    """Image files decoded and preprocessed batch by batch (in process, in workers or on the GPU)."""

    def __init__(self, name: str, sets: list[ImageSet], mode: str, targets: Targets, env: dict[str, Any]):
        self.name = name
        self.sets = sets
        self.mode = mode
        self.size = sum(len(s.relpaths) for s in sets)
        self.targets = targets
        self.env = env

    def batches(self, batch_size: int = 256, *, workers: int = 0, device: str = "cpu") -> Iterator[Batch]:
        decoder = BatchDecoder(self.mode, workers=workers, device=device)
        self.env["decode"] = decoder.description
        # Two views of one lazy plan: the decoder reads ahead a few batches, tee buffers only those.
        described, to_decode = itertools.tee(self._plan(batch_size))
        paths = (p for _, _, _, p in to_decode)
        for (index, ids, group, _), inputs in zip(described, decoder.map(paths), strict=True):
            yield Batch(inputs, index, ids, group)

    def _plan(self, batch_size: int):
        """(positions, ids, group, paths) per batch; batches never straddle two sets."""
        position = 0
        for image_set in self.sets:
            root = str(image_set.root)
            rels = image_set.relpaths
            for start in range(0, len(rels), batch_size):
                chunk = rels[start : start + batch_size]
                index = np.arange(position, position + len(chunk), dtype=np.int64)
                ids = [image_set.id_prefix + rel for rel in chunk]
                yield index, ids, dict(image_set.group), [f"{root}/{rel}" for rel in chunk]
                position += len(chunk)
