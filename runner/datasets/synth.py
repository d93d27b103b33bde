"""Pixels for fake datasets: each class has its own colour and stripe pattern, plus per-image
noise and shift, so a tiny model trained on a fake copy beats chance while the files stay small.

The class key is the 1k ImageNet index for the ImageNet family and the geographic sets (so a model
trained on fake ImageNet transfers to fake GeoDE and Dollar Street), the class index for CIFAR.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def class_style(key: int) -> tuple[np.ndarray, float, float]:
    """(RGB base colour, stripe frequency in cycles per image, stripe angle) of a class."""
    rng = np.random.default_rng(10_007 + int(key))
    colour = rng.uniform(40, 215, size=3)
    frequency = 1.5 + (int(key) % 5)
    angle = np.pi * ((int(key) * 37) % 180) / 180.0
    return colour, frequency, angle


def pattern(
    key: int, height: int, width: int, rng: np.random.Generator, *, noise: float = 10.0
) -> np.ndarray:
    """uint8 [height, width, 3] for class ``key``."""
    colour, frequency, angle = class_style(key)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    scale = float(max(height, width))
    phase = rng.uniform(0, 2 * np.pi)
    along = (xs * np.cos(angle) + ys * np.sin(angle)) / scale
    stripes = 0.75 + 0.25 * np.sin(2 * np.pi * frequency * along + phase)
    image = colour[None, None, :] * stripes[..., None]
    image = image + rng.normal(0.0, noise, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def jpeg_bytes(array: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def corrupt(images: np.ndarray, corruption_index: int, severity: int, rng: np.random.Generator) -> np.ndarray:
    """A stand-in corruption for fake -C sets: stronger with severity, different per corruption.

    Not the ImageNet-C/CIFAR-C corruptions (those come only from the released files); it only
    makes accuracy fall with severity so the breakdowns have something to show.
    """
    x = images.astype(np.float32)
    strength = severity / 5.0
    kind = corruption_index % 3
    if kind == 0:  # noise
        x = x + rng.normal(0.0, 60.0 * strength, size=x.shape)
    elif kind == 1:  # contrast towards grey
        x = 128.0 + (x - 128.0) * (1.0 - 0.8 * strength)
    else:  # brightness shift
        x = x + 90.0 * strength
    return np.clip(x, 0, 255).astype(np.uint8)
