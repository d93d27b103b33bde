"""Pixels for fake datasets: each class has its own colour and stripe pattern, plus per-image
noise and shift, so a tiny model trained on a fake copy beats chance while the files stay small.

The class key is the 1k ImageNet index for the ImageNet family and the geographic sets (so a model
trained on fake ImageNet transfers to fake GeoDE and Dollar Street), the class index for CIFAR.

Difficulty is the writers' choice, never measured: ``distract`` blends an image towards another
class's pattern by an amount each writer sets per group (a region, an income quartile, a shifted
set), and ``corrupt`` strengthens each stand-in corruption with severity at its own rate. Models
trained on clean patterns (runner/baselines/classifiers/demo.py) then score lower, by a varying
margin, where the writer made the images harder.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage


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


def distract(
    image: np.ndarray, amount: float, rng: np.random.Generator, *, others: Sequence[int] | None = None
) -> np.ndarray:
    """uint8 ``image`` [H, W, 3] blended towards the pattern of a random class of ``others``
    (class keys; default any of the 1,000).

    ``amount`` in [0, 1] is the mean blend weight; each image draws its own weight uniformly from
    [0, 2·amount] (capped at 0.9), so a harder group holds more images a model gets wrong, not
    only uniformly fainter ones. ``amount`` 0 returns the image unchanged (no random draws).
    """
    if amount <= 0:
        return image
    weight = min(0.9, float(rng.uniform(0.0, 2.0 * amount)))
    key = int(rng.integers(0, 1000)) if not others else int(others[int(rng.integers(0, len(others)))])
    other = pattern(key, image.shape[0], image.shape[1], rng)
    blended = (1.0 - weight) * image.astype(np.float32) + weight * other.astype(np.float32)
    return np.clip(blended, 0, 255).astype(np.uint8)


def desaturate(image: np.ndarray, amount: float) -> np.ndarray:
    """uint8 ``image`` [H, W, 3] moved towards its grey level by ``amount`` in [0, 1]: the colour
    goes, the stripes stay (the fake ImageNet-R's stand-in for renditions)."""
    x = image.astype(np.float32)
    grey = x.mean(axis=-1, keepdims=True)
    return np.clip(grey + (1.0 - amount) * (x - grey), 0, 255).astype(np.uint8)


CORRUPTION_KINDS = ("noise", "contrast", "brightness", "blur", "pixelate", "colour")


def corruption_rate(corruption_index: int) -> float:
    """How fast stand-in corruption ``corruption_index`` hardens with severity (0.35–1.1): fixed
    per corruption so that some are harder than others."""
    return 0.35 + 0.75 * ((corruption_index * 7) % 11) / 10.0


def corrupt(images: np.ndarray, corruption_index: int, severity: int, rng: np.random.Generator) -> np.ndarray:
    """A stand-in corruption for fake -C sets: uint8 [N, H, W, 3] in, the same out; stronger with
    severity (1–5), a different kind and rate per corruption (CORRUPTION_KINDS, corruption_rate).

    Not the ImageNet-C/CIFAR-C corruptions (those come only from the released files); it only
    makes accuracy fall with severity, faster for some corruptions than for others, so the
    breakdowns have something to show.
    """
    x = images.astype(np.float32)
    strength = min(1.0, corruption_rate(corruption_index) * severity / 5.0)
    kind = CORRUPTION_KINDS[corruption_index % len(CORRUPTION_KINDS)]
    if kind == "noise":
        x = x + rng.normal(0.0, 110.0 * strength, size=x.shape)
    elif kind == "contrast":  # towards grey
        x = 128.0 + (x - 128.0) * (1.0 - 0.9 * strength)
    elif kind == "brightness":
        x = x + 120.0 * strength
    elif kind == "blur":  # a box blur as wide as the strength asks, plus the blur's loss of contrast
        width = 1 + int(round(strength * x.shape[2] / 6))
        x = ndimage.uniform_filter(x, size=(1, width, width, 1), mode="reflect")
        x = 128.0 + (x - 128.0) * (1.0 - 0.5 * strength)
    elif kind == "pixelate":  # blocks, then noise as a compressor's artefacts would add
        block = max(1, int(round(strength * x.shape[2] / 4)))
        h, w = x.shape[1], x.shape[2]
        small = x[:, ::block, ::block]
        x = np.repeat(np.repeat(small, block, axis=1), block, axis=2)[:, :h, :w]
        x = x + rng.normal(0.0, 60.0 * strength, size=x.shape)
    else:  # colour: the channels rotate towards each other, so colour cues mislead
        x = (1.0 - 0.6 * strength) * x + 0.6 * strength * np.roll(x, 1, axis=-1)
    return np.clip(x, 0, 255).astype(np.uint8)
