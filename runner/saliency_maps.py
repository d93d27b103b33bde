"""The numpy half of runner/saliency.py (issue 17 item 5; shared/PROTOCOLS.md "Saliency"): what
needs no torch, so that an ONNX model's sandbox computes occlusion without importing torch, and
the maps' transport. numpy only, no other runner module: it is bound into the sandbox beside
runner/sandboxed/saliency_server.py (runner.sandboxed.FROM_RUNNER). runner/saliency.py re-exports
everything here; its module docstring lists the methods and the post-processing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

EPS_NORMALIZE = 1e-7  # PROTOCOLS: (L − min)/(max − min + 1e-7)
LAYER_METHODS = ("gradcam", "gradcam++", "smooth-gradcam++", "normgrad")
METHODS = (*LAYER_METHODS, "smoothgrad", "occlusion")


@dataclass
class Saliency:
    """Maps of one batch: ``maps`` float32 [N, H, W] in [0, 1]; ``target`` int64 [N], the class
    explained per image; ``layer`` the dotted layer name(s) (None for input methods)."""

    method: str
    maps: np.ndarray
    target: np.ndarray
    layer: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """What travels with the maps: method, layer, parameters (JSON-ready)."""
        return {"method": self.method, "layer": self.layer, "params": dict(self.params)}


def minmax(raw: np.ndarray) -> np.ndarray:
    """PROTOCOLS post-processing of raw maps [N, H, W] already at the input's size: ReLU, then per
    map (L − min)/(max − min + 1e-7), float32 (a constant map becomes 0)."""
    raw = np.maximum(np.asarray(raw, dtype=np.float64), 0.0)
    if raw.ndim != 3:
        raise ValueError(f"raw maps must be [N, H, W], got shape {list(raw.shape)}")
    low = raw.min(axis=(1, 2), keepdims=True)
    high = raw.max(axis=(1, 2), keepdims=True)
    return ((raw - low) / (high - low + EPS_NORMALIZE)).astype(np.float32)


def as_images(x: Any) -> np.ndarray:
    """A float32 numpy [N, C, H, W] batch from numpy or torch (copied off any device). Raises
    ValueError for another shape, a non-float dtype or an empty batch."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    images = np.asarray(x)
    if images.ndim != 4 or images.dtype.kind != "f":
        raise ValueError(
            f"images must be a float [N, C, H, W] batch, got {images.dtype} {list(images.shape)}"
        )
    if images.shape[0] == 0:
        raise ValueError("no images to explain")
    return images.astype(np.float32)


def targets_of(logits: np.ndarray, target: Any) -> np.ndarray:
    """int64 [N]: ``target`` when given (checked against the logits' classes), else the top-1."""
    n, classes = logits.shape
    if target is None:
        return np.asarray(logits.argmax(axis=1), dtype=np.int64)
    t = np.asarray(target, dtype=np.int64).reshape(-1)
    if len(t) != n:
        raise ValueError(f"{len(t)} targets for {n} images")
    if (t < 0).any() or (t >= classes).any():
        raise ValueError(f"targets must lie in 0–{classes - 1}")
    return t


def occlusion_window(height: int, width: int) -> tuple[int, int]:
    """(k, s), the window side and stride in pixels for an input H×W: PROTOCOLS' CIFAR k 8, s 4
    and 224-pixel k 32, s 16, i.e. k = min(32, max(1, min(H, W) // 4)), s = max(1, k // 2)
    (digits, 8×8: k 2, s 1)."""
    k = min(32, max(1, min(height, width) // 4))
    return k, max(1, k // 2)


def _starts(length: int, k: int, s: int) -> list[int]:
    """Window starts 0, s, 2s, … plus length − k, so every pixel is covered by a window."""
    starts = list(range(0, max(length - k, 0) + 1, s))
    if starts[-1] + k < length:
        starts.append(length - k)
    return starts


def occlusion(
    predict: Callable[[np.ndarray], np.ndarray],
    x: Any,
    *,
    fill: Sequence[float] | None = None,
    window: int | None = None,
    stride: int | None = None,
    target: Sequence[int] | None = None,
    score: str = "probability",
    batch_size: int = 256,
) -> Saliency:
    """Occlusion (Zeiler & Fergus, arXiv 1311.2901, sec. 4.2; PROTOCOLS): each k×k window at
    stride s (:func:`occlusion_window` by default; a last window flush with the far edge so every
    pixel is covered) is filled with ``fill`` (one value per channel: the training set's mean in
    [0, 1]; default the mean of the batch per channel); Δ_w = p_c(x) − p_c(x with w filled);
    map(u) = mean Δ_w over the windows covering u; post-processed (:func:`minmax`; a window
    whose filling raises p_c counts as 0 after the ReLU). ``score`` "probability" (softmax, the
    protocol) or "logit" (S_c). Needs no gradients: ``predict`` maps float32 numpy
    [n, C, H, W] to logits [n, classes] (numpy or torch), called with at most ``batch_size``
    images. Raises ValueError for a bad batch, fill, window or target."""
    images = as_images(x)
    n, channels, height, width = images.shape
    k0, s0 = occlusion_window(height, width)
    k, s = window or k0, stride or s0
    if not (1 <= k <= min(height, width)) or s < 1:
        raise ValueError(f"window {k} and stride {s} must fit the {height}×{width} input")
    if score not in ("probability", "logit"):
        raise ValueError(f"score must be 'probability' or 'logit', got {score!r}")
    values = images.mean(axis=(0, 2, 3)) if fill is None else np.asarray(fill, dtype=np.float32).reshape(-1)
    if values.shape != (channels,):
        raise ValueError(f"fill needs {channels} values (one per channel), got {values.shape[0]}")

    def scores(batch: np.ndarray, classes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        out: list[np.ndarray] = []
        for lo in range(0, len(batch), batch_size):
            logits = predict(np.ascontiguousarray(batch[lo : lo + batch_size]))
            if hasattr(logits, "detach"):
                logits = logits.detach().float().cpu().numpy()
            out.append(np.asarray(logits, dtype=np.float64))
        z = np.concatenate(out)
        if z.ndim != 2 or len(z) != len(batch):
            raise ValueError(f"predict must return logits [{len(batch)}, classes], got {list(z.shape)}")
        if classes is None:
            classes = targets_of(z, target)
        if score == "probability":
            z = np.exp(z - z.max(axis=1, keepdims=True))
            z /= z.sum(axis=1, keepdims=True)
        return z[np.arange(len(z)), np.resize(classes, len(z))], classes

    clean, c = scores(images, None)
    windows = [(i, j) for i in _starts(height, k, s) for j in _starts(width, k, s)]
    occluded = np.repeat(images[None], len(windows), axis=0)  # [W, N, C, H, W]
    for w, (i, j) in enumerate(windows):
        occluded[w, :, :, i : i + k, j : j + k] = values[None, :, None, None]
    dropped, _ = scores(occluded.reshape(-1, channels, height, width), np.tile(c, len(windows)))
    delta = clean[None] - dropped.reshape(len(windows), n)
    total = np.zeros((n, height, width))
    count = np.zeros((height, width))
    for w, (i, j) in enumerate(windows):
        total[:, i : i + k, j : j + k] += delta[w, :, None, None]
        count[i : i + k, j : j + k] += 1
    maps = minmax(total / count)
    return Saliency(
        "occlusion",
        maps,
        c.astype(np.int64),
        None,
        {"window": k, "stride": s, "fill": [round(float(v), 4) for v in values], "score": score},
    )


def quantize(maps: np.ndarray, side: int = 16) -> np.ndarray:
    """Maps float32 [N, H, W] in [0, 1] → uint8 [N, side, side] (value/255 is the saliency): area
    averaging to side×side when larger (the bins of torch's ``adaptive_avg_pool2d``: rows
    ⌊i·H/S⌋ to ⌈(i+1)·H/S⌉), nearest neighbour when smaller (row ⌊i·H/S⌋: digits' 8×8 pixels
    become 2×2 blocks, as their thumbnails do), then round(255·v). What travels with a result
    (runner/sandboxed/saliency_server.py). Raises ValueError for another shape."""
    m = np.clip(np.asarray(maps, dtype=np.float64), 0.0, 1.0)
    if m.ndim != 3:
        raise ValueError(f"maps must be [N, H, W], got shape {list(m.shape)}")
    n, height, width = m.shape
    if height >= side and width >= side:
        rows = [(i * height // side, -(-(i + 1) * height // side)) for i in range(side)]
        cols = [(j * width // side, -(-(j + 1) * width // side)) for j in range(side)]
        out = np.empty((n, side, side))
        for i, (r0, r1) in enumerate(rows):
            for j, (c0, c1) in enumerate(cols):
                out[:, i, j] = m[:, r0:r1, c0:c1].mean(axis=(1, 2))
    else:
        out = m[:, (np.arange(side) * height) // side][:, :, (np.arange(side) * width) // side]
    return np.rint(out * 255).astype(np.uint8)
