"""The six noise settings of the Noise2Score protocol (shared/PROTOCOLS.md, "Denoising"), drawn
with a seed derived from the task and the image so every submission sees the same noisy input.

- Gaussian ``y = x + N(0, (σ/255)²)``, σ ∈ {25, 50}
- Poisson  ``y = ζ·Poisson(x/ζ)``,       ζ ∈ {0.01, 0.05}
- Gamma    ``y = x·Gamma(shape k, scale 1/k)``, k ∈ {100, 50}

Noise is drawn in float64 from the clean image and the noisy image is returned as float32.
Nothing is clipped: a Gaussian-noisy pixel may lie outside [0, 1].
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

FAMILIES = ("gaussian", "poisson", "gamma")
# The code a module that wants the noise level reads in column 0 of its second input.
FAMILY_CODES = {"gaussian": 0, "poisson": 1, "gamma": 2}

SEED_SCHEME = (
    "numpy.random.Generator(PCG64(seed)), seed = first 8 bytes (little-endian) of "
    "sha256('<task slug>/<image stem>'); noise drawn in float64, noisy image cast to float32"
)


@dataclass(frozen=True)
class Noise:
    """One noise setting: ``level`` is σ (in 0–255 units) for gaussian, ζ for poisson, k for gamma."""

    family: str
    level: float

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown noise family {self.family!r}; expected one of {', '.join(FAMILIES)}")
        if not self.level > 0:
            raise ValueError(f"noise level must be positive, got {self.level}")
        if self.family == "gamma" and self.level <= 1:
            raise ValueError("gamma noise needs k > 1 (Tweedie's formula divides by k − 1)")

    @classmethod
    def from_params(cls, params: dict) -> Noise:
        """From a catalogue task's params (``{"family": ..., "level": ...}``)."""
        return cls(str(params["family"]), float(params["level"]))

    @classmethod
    def from_task(cls, task_slug: str) -> Noise:
        from runner.catalogue import catalogue_task

        return cls.from_params(catalogue_task(task_slug).params)

    @property
    def slug(self) -> str:
        """The noise part of a task slug: gauss25, poisson0.01, gamma100, ..."""
        prefix = {"gaussian": "gauss", "poisson": "poisson", "gamma": "gamma"}[self.family]
        return f"{prefix}{self.level:g}"

    @property
    def code(self) -> int:
        return FAMILY_CODES[self.family]

    def std_at(self, x: np.ndarray | float) -> np.ndarray | float:
        """The noise's standard deviation at clean intensity ``x`` (used by the filters' tuning and
        by BM3D's effective sigma)."""
        if self.family == "gaussian":
            return self.level / 255.0 + 0.0 * np.asarray(x)
        if self.family == "poisson":
            return np.sqrt(self.level * np.maximum(x, 0.0))
        return np.asarray(x) / np.sqrt(self.level)

    def as_env(self) -> dict:
        return {"noise_family": self.family, "noise_level": self.level, "noise": self.slug,
                "seed_scheme": SEED_SCHEME}


def noise_seed(task_slug: str, stem: str) -> int:
    digest = hashlib.sha256(f"{task_slug}/{stem}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def add_noise(clean: np.ndarray, noise: Noise, rng: np.random.Generator) -> np.ndarray:
    """Corrupt ``clean`` (any shape, values in [0, 1]) with ``noise``; float32 result."""
    x = np.asarray(clean, dtype=np.float64)
    if noise.family == "gaussian":
        y = x + rng.standard_normal(x.shape) * (noise.level / 255.0)
    elif noise.family == "poisson":
        zeta = noise.level
        y = zeta * rng.poisson(np.maximum(x, 0.0) / zeta)
    else:
        k = noise.level
        y = x * rng.gamma(shape=k, scale=1.0 / k, size=x.shape)
    return y.astype(np.float32)


def noisy_image(task_slug: str, stem: str, clean: np.ndarray, noise: Noise) -> np.ndarray:
    """The noisy input of image ``stem`` in task ``task_slug``: the same on every run and node."""
    return add_noise(clean, noise, np.random.Generator(np.random.PCG64(noise_seed(task_slug, stem))))


def make_noisy_inputs(task_slug: str, images: dict[str, np.ndarray], noise: Noise | None = None
                      ) -> dict[str, np.ndarray]:
    """Noisy inputs for every image of a set, keyed like ``images``; ``noise`` defaults to the
    catalogue's setting for ``task_slug``."""
    noise = noise or Noise.from_task(task_slug)
    return {stem: noisy_image(task_slug, stem, clean, noise) for stem, clean in images.items()}


def inputs_sha256(noisy: dict[str, np.ndarray]) -> str:
    """A digest of the noisy inputs (stems and float32 bytes, in stem order): two runs that report
    the same digest scored the same inputs, whatever numpy version drew them."""
    digest = hashlib.sha256()
    for stem in sorted(noisy):
        digest.update(stem.encode() + b"\0")
        digest.update(np.ascontiguousarray(noisy[stem], dtype=np.float32).tobytes())
    return digest.hexdigest()
