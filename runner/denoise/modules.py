"""Denoisers as torch modules: what a denoiser submission is, and what the TorchScript baselines are.

The artifact contract (a denoiser submission, and every module here):

- ``forward(noisy)`` takes a float32 batch ``[N, C, H, W]`` (C = 1 or 3, values mostly in [0, 1]
  but unclipped) and returns the estimate with the same shape.
- A module that needs the noise setting says so with a boolean attribute
  ``wants_noise_level = True`` (kept by ``torch.jit.script``; read it with
  :func:`wants_noise_level`). It is then called as ``forward(noisy, noise)`` where ``noise`` is a
  float32 tensor ``[N, 2]``: column 0 the family code (0 gaussian, 1 poisson, 2 gamma), column 1
  the level in the protocol's units (σ on the 0–255 scale, ζ, or k), exactly the task's
  ``params["level"]``. For ONNX and ExportedProgram artifacts, which carry no attributes, the
  same rule reads from the graph: two inputs means it wants the noise.

Tracks call :func:`call_module`, which builds the noise tensor and checks the output.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .noise import FAMILY_CODES, Noise


def noise_tensor(noise: Noise, n: int) -> torch.Tensor:
    return torch.tensor([[float(noise.code), float(noise.level)]] * n, dtype=torch.float32)


def wants_noise_level(module: torch.nn.Module) -> bool:
    return bool(getattr(module, "wants_noise_level", False))


def call_module(module: torch.nn.Module, noisy: torch.Tensor, noise: Noise) -> torch.Tensor:
    """Run a denoiser module on a batch under the contract above; raise ValueError when the
    output breaks it (the caller maps that to ``wrong_output`` / ``not_finite``)."""
    with torch.inference_mode():
        if wants_noise_level(module):
            out = module(noisy, noise_tensor(noise, noisy.shape[0]).to(noisy.device))
        else:
            out = module(noisy)
    if not isinstance(out, torch.Tensor) or out.shape != noisy.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the denoiser returned {got}; the contract is the input's shape {tuple(noisy.shape)}")
    if not torch.isfinite(out).all():
        raise ValueError("the denoiser returned NaN or infinite values")
    return out.float()


def _per_channel(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] → [N·C, 1, H, W]: the filters and the shipped score networks treat every
    colour plane as a grayscale image."""
    return x.reshape(x.shape[0] * x.shape[1], 1, x.shape[2], x.shape[3])


def _nearest(table: torch.Tensor, family: float, level: float) -> int:
    """The row ``(family, level, ...)`` of ``table`` whose family matches and whose level is
    nearest (in log scale); -1 when the family has no row."""
    best = -1
    best_distance = 1e30
    for i in range(table.shape[0]):
        if float(table[i, 0]) == family:
            distance = abs(math.log(float(table[i, 1])) - math.log(level))
            if distance < best_distance:
                best_distance = distance
                best = i
    return best


def _lookup(table: torch.Tensor, family: float, level: float) -> float:
    """The value of the nearest row ``(family, level, value)`` (:func:`_nearest`); -1 when the
    family has no row."""
    i = _nearest(table, family, level)
    return float(table[i, 2]) if i >= 0 else -1.0


class IdentityDenoiser(nn.Module):
    """The noisy input itself: the floor every denoiser must beat."""


    def __init__(self):
        super().__init__()
        self.wants_noise_level = False

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        return noisy.clone()


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3.0 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of every plane, reflecting at the border (clamped to the image)."""
    planes = _per_channel(x)
    kernel = gaussian_kernel1d(sigma).to(x.dtype).to(x.device)
    radius = kernel.shape[0] // 2
    pad_h = min(radius, x.shape[2] - 1)
    pad_w = min(radius, x.shape[3] - 1)
    k = kernel.shape[0]
    out = F.pad(planes, [0, 0, pad_h, pad_h], mode="reflect") if pad_h > 0 else planes
    out = F.conv2d(F.pad(out, [0, 0, radius - pad_h, radius - pad_h], mode="replicate"), kernel.view(1, 1, k, 1))
    out = F.pad(out, [pad_w, pad_w, 0, 0], mode="reflect") if pad_w > 0 else out
    out = F.conv2d(F.pad(out, [radius - pad_w, radius - pad_w, 0, 0], mode="replicate"), kernel.view(1, 1, 1, k))
    return out.reshape(x.shape)


def median_blur(x: torch.Tensor, size: int) -> torch.Tensor:
    """Median over a ``size``×``size`` window of every plane, replicating the border."""
    planes = _per_channel(x)
    radius = size // 2
    padded = F.pad(planes, [radius, radius, radius, radius], mode="replicate")
    windows = F.unfold(padded, kernel_size=size)  # [N·C, size², H·W]
    return windows.median(dim=1).values.reshape(x.shape)


class _TunedFilter(nn.Module):
    """A filter whose setting is looked up per noise setting in a ``(family, level, value)`` table;
    the tables were tuned on the training photographs (never the test sets) by
    :func:`runner.denoise.baselines.tune_filters`."""

    def __init__(self, table: list[tuple[str, float, float]]):
        super().__init__()
        self.wants_noise_level = True
        self.register_buffer("table", torch.tensor([[float(FAMILY_CODES[f]), lv, v] for f, lv, v in table]))


class GaussianFilterDenoiser(_TunedFilter):
    """A Gaussian blur whose width (in pixels) is looked up per noise setting."""

    def forward(self, noisy: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        outs = []
        for i in range(noisy.shape[0]):
            sigma = _lookup(self.table, float(noise[i, 0]), float(noise[i, 1]))
            if sigma <= 0.0:
                sigma = 1.0
            outs.append(gaussian_blur(noisy[i:i + 1], sigma))
        return torch.cat(outs, dim=0)


class MedianFilterDenoiser(_TunedFilter):
    """A median filter whose window is looked up per noise setting."""

    def forward(self, noisy: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        outs = []
        for i in range(noisy.shape[0]):
            size = int(_lookup(self.table, float(noise[i, 0]), float(noise[i, 1])))
            if size < 1:
                size = 3
            outs.append(median_blur(noisy[i:i + 1], size))
        return torch.cat(outs, dim=0)


# --------------------------------------------------------------------------------------------
# Noise2Score: a score network and Tweedie's formula per noise family.
# --------------------------------------------------------------------------------------------
def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.1),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.1))


class ScoreUNet(nn.Module):
    """A two-level U-Net (one-channel in and out) small enough to train on a CPU in a minute."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.enc0 = _block(1, width)
        self.enc1 = _block(width, 2 * width)
        self.enc2 = _block(2 * width, 2 * width)
        self.dec1 = _block(4 * width, 2 * width)
        self.dec0 = nn.Sequential(nn.Conv2d(3 * width, width, 3, padding=1), nn.LeakyReLU(0.1),
                                  nn.Conv2d(width, 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        pad_h, pad_w = (-h) % 4, (-w) % 4
        if pad_h > 0 or pad_w > 0:
            x = F.pad(x, [0, pad_w, 0, pad_h], mode="replicate")
        h0 = self.enc0(x)
        h1 = self.enc1(F.avg_pool2d(h0, 2))
        h2 = self.enc2(F.avg_pool2d(h1, 2))
        u1 = self.dec1(torch.cat([F.interpolate(h2, scale_factor=2.0, mode="nearest"), h1], dim=1))
        out = self.dec0(torch.cat([F.interpolate(u1, scale_factor=2.0, mode="nearest"), h0], dim=1))
        return out[:, :, :h, :w]


class Noise2ScoreNet(nn.Module):
    """A score network for one noise setting, and Tweedie's formula for its family.

    The score is taken in the variable the family's formula uses: ``y`` for Gaussian and Gamma,
    the count ``y/ζ`` for Poisson. The network sees the image on its [0, 1] scale and its output
    is multiplied by a fixed per-family scale so that it is of order one: 1/σ (Gaussian),
    √ζ (Poisson, in counts), √k (Gamma).

    Tweedie (shared/PROTOCOLS.md): Gaussian x̂ = y + σ²·s(y); Poisson x̂ = (y + ζ/2)·exp(s(y/ζ));
    Gamma x̂ = k·y / ((k − 1) − y·s(y)). Guards that only matter for a badly trained network:
    the Poisson exponent is capped at 20 and the Gamma denominator kept ≥ 1e-3.
    """


    def __init__(self, family: str, level: float, width: int = 16):
        super().__init__()
        self.family = FAMILY_CODES[family]
        self.level = float(level)
        self.net = ScoreUNet(width)

    def to_domain(self, y: torch.Tensor) -> torch.Tensor:
        return y / self.level if self.family == 1 else y

    def score(self, v: torch.Tensor) -> torch.Tensor:
        """The score ∇ log p at ``v`` (in the family's domain variable)."""
        if self.family == 0:
            return self.net(v) * (255.0 / self.level)
        if self.family == 1:
            return self.net(v * self.level) * math.sqrt(self.level)
        return self.net(v) * math.sqrt(self.level)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        s = self.score(self.to_domain(y))
        if self.family == 0:
            sigma = self.level / 255.0
            return y + sigma * sigma * s
        if self.family == 1:
            zeta = self.level
            return (y + zeta / 2.0) * torch.exp(torch.clamp(s, max=20.0))
        k = self.level
        return k * y / torch.clamp((k - 1.0) - y * s, min=1e-3)


class Noise2ScoreDenoiser(nn.Module):
    """The six shipped score networks in one module: each image goes to the network of its
    family whose level is nearest (log scale) to the requested one. Colour images are denoised
    one plane at a time (the networks are single-channel); the estimate is clamped to [0, 1]."""


    def __init__(self, nets: list[Noise2ScoreNet]):
        super().__init__()
        self.wants_noise_level = True
        self.nets = nn.ModuleList(nets)
        self.register_buffer("keys", torch.tensor([[float(n.family), n.level] for n in nets]))

    def forward(self, noisy: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        outs = []
        for i in range(noisy.shape[0]):
            best = _nearest(self.keys, float(noise[i, 0]), float(noise[i, 1]))
            if best < 0:
                raise RuntimeError("no score network for this noise family")
            planes = _per_channel(noisy[i:i + 1])
            estimate = planes
            for j, net in enumerate(self.nets):
                if j == best:
                    estimate = net(planes)
            outs.append(torch.clamp(estimate, 0.0, 1.0).reshape(noisy[i:i + 1].shape))
        return torch.cat(outs, dim=0)
