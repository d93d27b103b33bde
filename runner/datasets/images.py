"""Decoding and preprocessing of image files for the ImageNet family and the geographic sets.

Two preprocessings (shared/PROTOCOLS.md): ``resize256-centercrop224`` (resize the shorter side to
256 with bilinear filtering, centre-crop 224, as torchvision's ``Resize(256)`` +
``CenterCrop(224)`` on PIL images) and ``centercrop224`` for ImageNet-C, whose files are already
224×224. Pixels go to float32 in [0, 1]; the model normalizes.

Three ways to decode a batch of files, all yielding batches in order:
- in the calling thread (``workers=0``);
- in a pool of ``workers`` threads, a bounded number of batches ahead;
- on the GPU with nvJPEG (``device="cuda..."`` when CUDA is available), falling back to the CPU
  for files nvJPEG cannot read (PNG, CMYK).

Threads, not processes: PIL releases the GIL while it decodes a JPEG and while it resizes, which
is nearly all of the work (about 0.4 ms of 6 ms per val image holds it), so threads decode as
fast as a process pool that is already running and much faster than one started per reader
(tests/bench/bench_decode.py). Above all, a thread can start anywhere: `runner work` evaluates
inside a Celery prefork child, a daemonic process that may not start multiprocessing children
("daemonic processes are not allowed to have children"), and runner.evaluate runs every track,
`runner run`'s included, under that same rule.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from runner.datasets.base import DatasetMissing

RESIZE_CROP = "resize256-centercrop224"
CENTER_CROP = "centercrop224"
CROP = 224
RESIZE = 256


def resized_size(width: int, height: int, shorter: int = RESIZE) -> tuple[int, int]:
    """torchvision's rule: the shorter side becomes ``shorter``, the longer one is truncated."""
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def crop_box(width: int, height: int, size: int = CROP) -> tuple[int, int, int, int]:
    """torchvision's centre crop: offsets rounded, as in ``CenterCrop``."""
    left = int(round((width - size) / 2.0))
    top = int(round((height - size) / 2.0))
    return left, top, left + size, top + size


def preprocess(image: Image.Image, mode: str) -> np.ndarray:
    """A PIL image → uint8 [224, 224, 3] after the named preprocessing."""
    image = image.convert("RGB")
    if mode == RESIZE_CROP or min(image.size) < CROP:
        # ImageNet-C files are 224×224; a smaller one (never in the release) is resized up first.
        shorter = RESIZE if mode == RESIZE_CROP else CROP
        image = image.resize(resized_size(*image.size, shorter), Image.Resampling.BILINEAR)
    elif mode != CENTER_CROP:
        raise ValueError(f"unknown preprocessing {mode!r}")
    if image.size != (CROP, CROP):
        image = image.crop(crop_box(*image.size))
    return np.asarray(image, dtype=np.uint8)


def load_file(path: str, mode: str) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return preprocess(image, mode)
    except (OSError, SyntaxError, ValueError) as exc:  # PIL raises these for unreadable files
        raise DatasetMissing(f"cannot read image {path}: {exc}") from exc


def decode_batch(paths: list[str], mode: str) -> np.ndarray:
    """uint8 [B, 224, 224, 3]; raises DatasetMissing for a file PIL cannot read."""
    out = np.empty((len(paths), CROP, CROP, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        out[i] = load_file(path, mode)
    return out


def to_model_input(batch: np.ndarray) -> np.ndarray:
    """uint8 NHWC → float32 NCHW in [0, 1]."""
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)


def cuda_requested(device: str) -> bool:
    if not device.startswith("cuda"):
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


class BatchDecoder:
    """Turns an iterable of path lists into model-ready batches, in the same order."""

    def __init__(self, mode: str, *, workers: int = 0, device: str = "cpu", prefetch: int = 2):
        self.mode = mode
        self.workers = max(0, int(workers))
        self.prefetch = max(1, int(prefetch))
        self.device = device
        self.on_gpu = cuda_requested(device)

    @property
    def description(self) -> str:
        if self.on_gpu:
            return f"nvJPEG on {self.device}, bilinear antialiased resize in torch"
        if self.workers:
            return f"PIL in {self.workers} threads"
        return "PIL in the runner process"

    def map(self, path_batches: Iterable[list[str]]) -> Iterator[Any]:
        if self.on_gpu:
            yield from self._map_gpu(path_batches)
        elif self.workers:
            yield from self._map_threads(path_batches)
        else:
            for paths in path_batches:
                yield to_model_input(decode_batch(paths, self.mode))

    def _map_threads(self, path_batches: Iterable[list[str]]) -> Iterator[np.ndarray]:
        """Decode ``workers * prefetch`` batches ahead at most, one batch per task, yielding in order."""
        source = iter(path_batches)
        pending: deque[Future] = deque()
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="runner-decode") as pool:
            try:
                for paths in source:
                    pending.append(pool.submit(decode_batch, paths, self.mode))
                    if len(pending) >= self.workers * self.prefetch:
                        break
                while pending:
                    done = pending.popleft()
                    following = next(source, None)
                    if following is not None:
                        pending.append(pool.submit(decode_batch, following, self.mode))
                    yield to_model_input(done.result())
            finally:  # a consumer that stops early (cancel, an error) must not wait for batches it will not read
                for future in pending:
                    future.cancel()

    def _map_gpu(self, path_batches: Iterable[list[str]]) -> Iterator[Any]:
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        device = torch.device(self.device)
        with ThreadPoolExecutor(max_workers=8) as readers:
            for paths in path_batches:
                data = list(readers.map(_read_bytes, paths))
                out = torch.empty((len(paths), 3, CROP, CROP), dtype=torch.float32, device=device)
                jpeg = [i for i, p in enumerate(paths) if Path(p).suffix.lower() in (".jpg", ".jpeg")]
                decoded: dict[int, Any] = {}
                if jpeg:
                    try:
                        images = _quietly(
                            decode_jpeg, [data[i] for i in jpeg], mode=ImageReadMode.RGB, device=device
                        )
                        decoded = dict(zip(jpeg, images, strict=True))
                    except RuntimeError:
                        decoded = {}  # one unreadable file fails the batch: decode one by one below
                        for i in jpeg:
                            try:
                                decoded[i] = _quietly(
                                    decode_jpeg, data[i], mode=ImageReadMode.RGB, device=device
                                )
                            except RuntimeError:
                                pass
                for i, path in enumerate(paths):
                    if i in decoded:
                        out[i] = _gpu_preprocess(decoded[i], self.mode)
                    else:  # PNG, CMYK or anything nvJPEG refused: the CPU path
                        cpu = torch.from_numpy(load_file(path, self.mode)).permute(2, 0, 1)
                        out[i] = cpu.to(device, non_blocking=True).float() / 255.0
                yield out


def _quietly(function, *args, **kwargs):
    """Call a torchvision.io function without its deprecation warning (0.29 points to TorchCodec,
    which this runner does not depend on; nvJPEG decoding through torchvision still works)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return function(*args, **kwargs)


def _read_bytes(path: str):
    from torchvision.io import read_file

    return _quietly(read_file, path)


def _gpu_preprocess(image, mode: str):
    """uint8 [3, H, W] on the GPU → float32 [3, 224, 224] in [0, 1], quantized like the CPU path."""
    import torch.nn.functional as F

    height, width = int(image.shape[-2]), int(image.shape[-1])
    x = image.unsqueeze(0).float()
    if mode == RESIZE_CROP or min(height, width) < CROP:
        new_w, new_h = resized_size(width, height, RESIZE if mode == RESIZE_CROP else CROP)
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
        x = x.round().clamp_(0, 255)
        height, width = new_h, new_w
    left, top, right, bottom = crop_box(width, height)
    return x[0, :, top:bottom, left:right] / 255.0
