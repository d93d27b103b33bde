"""Noise2Score (Kim & Ye, 2021): learn the score of the noisy images with the AR-DAE loss, then
denoise with Tweedie's formula for the noise family (runner/denoise/modules.py).

Training is self-supervised: the loss only ever sees noisy pixels. For one noise setting:

1. Cut random patches (with flips and quarter turns) from the noisy training images; colour
   images count as three grayscale planes (the networks are single-channel).
2. Perturb each patch in the family's domain variable v (y, or the count y/ζ for Poisson):
   ṽ = v + σ_a·u with u ~ N(0, I).
3. AR-DAE loss ‖u + σ_a·s(ṽ)‖² (mean over pixels): its minimiser is the score of v smoothed by
   N(0, σ_a²), which tends to the score of v as σ_a → 0.
4. Anneal σ_a linearly over the first 80% of the steps, then hold it, with Adam and a one-cycle
   learning rate. The paper's code anneals to σ_a = 0.001 over 22,000 steps on a GPU; a CPU
   minute cannot average away the loss's variance (∝ 1/σ_a²) at such a small σ_a, so σ_a goes
   from 0.6 to 0.3 times the noise's standard deviation at mid-gray, in the domain variable
   (a bias traded for variance). Measured on skimage-gray, 1,200 steps: Poisson ζ=0.01 with a
   constant σ_a of 0.5 / 1 / 2 / 3 / 5 counts gave 28.3 / 29.3 / 30.1 / 30.0 / 29.4 dB;
   Gaussian σ=25 with 0.015 / 0.03 / 0.05 gave 27.4 / 27.9 / 27.9 dB and 0.06 → 0.03 28.4 dB.

Checkpoints are safetensors files holding any number of settings: tensor ``<key>/<parameter>``
(key = the noise slug, e.g. ``gauss25``) and, in the metadata, a JSON ``entries`` object with the
family, level, architecture and training record of each. The shipped file
``checkpoints/noise2score.safetensors`` holds the six settings of the protocol, trained by
:func:`train_shipped_checkpoint` on the bundled photographs that no skimage test set uses.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from .modules import Noise2ScoreDenoiser, Noise2ScoreNet
from .noise import Noise, add_noise

CHECKPOINT_FORMAT = "noise2score-v1"
SHIPPED_CHECKPOINT = Path(__file__).parent / "checkpoints" / "noise2score.safetensors"
PROTOCOL_SETTINGS = (Noise("gaussian", 25.0), Noise("gaussian", 50.0), Noise("poisson", 0.01),
                     Noise("poisson", 0.05), Noise("gamma", 100.0), Noise("gamma", 50.0))


def default_sigma_a(noise: Noise) -> tuple[float, float]:
    """(start, end) of the AR-DAE perturbation: 0.6 and 0.3 times the noise's standard deviation
    at mid-gray, in the family's domain variable (y; counts y/ζ for Poisson)."""
    std = float(noise.std_at(0.5))
    if noise.family == "poisson":
        std /= noise.level
    return 0.6 * std, 0.3 * std


def _planes(images: Iterable[np.ndarray]) -> list[np.ndarray]:
    planes = []
    for image in images:
        image = np.asarray(image, dtype=np.float32)
        if image.ndim == 2:
            planes.append(image)
        else:
            planes.extend(image[:, :, c] for c in range(image.shape[2]))
    return planes


def ardae_loss(net: Noise2ScoreNet, v: torch.Tensor, sigma_a: float, generator: torch.Generator) -> torch.Tensor:
    """‖u + σ_a·s(v + σ_a·u)‖², averaged over pixels (v in the family's domain variable)."""
    u = torch.randn(v.shape, generator=generator, dtype=v.dtype)
    return ((u + sigma_a * net.score(v + sigma_a * u)) ** 2).mean()


def train_noise2score(
    images: dict[str, np.ndarray] | Iterable[np.ndarray],
    *,
    family: str,
    level: float,
    steps: int,
    seed: int = 0,
    out_path: str | Path | None = None,
    clean: bool = False,
    width: int = 16,
    batch_size: int = 8,
    patch: int = 32,
    lr: float = 1e-3,
    sigma_a: tuple[float, float] | None = None,
    threads: int | None = None,
    log: Callable[[str], None] | None = None,
) -> Noise2ScoreNet:
    """Train one Noise2Score network and return it (eval mode); with ``out_path`` also add it to
    that safetensors checkpoint (other settings already in the file are kept).

    ``images`` are the noisy observations (``H×W`` or ``H×W×C`` float arrays, a dict's values or
    any iterable): the self-supervised setting. With ``clean=True`` they are clean pictures and
    the function first corrupts each with the (family, level) noise drawn from ``seed`` — for
    demos on bundled photographs; the loss still sees only the noisy pixels. ``steps`` Adam steps
    of ``batch_size`` patches of ``patch``² pixels; ``threads`` sets torch's CPU threads.
    """
    noise = Noise(family, float(level))
    if threads:
        torch.set_num_threads(threads)
    names = list(images) if isinstance(images, dict) else []
    arrays = list(images.values()) if isinstance(images, dict) else list(images)
    rng = np.random.Generator(np.random.PCG64(seed))
    if clean:
        arrays = [add_noise(a, noise, rng) for a in arrays]
    planes = _planes(arrays)
    if not planes:
        raise ValueError("no training images")
    patch = min(patch, *(min(p.shape) for p in planes))
    patch -= patch % 4
    planes_t = [torch.from_numpy(p) for p in planes]
    weights = np.array([p.size for p in planes], dtype=np.float64)
    weights /= weights.sum()

    torch_gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = Noise2ScoreNet(noise.family, noise.level, width)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(steps, 2), pct_start=0.1)
    start, end = sigma_a or default_sigma_a(noise)
    anneal_steps = max(1, int(0.8 * steps))

    def batch() -> torch.Tensor:
        out = []
        for index in rng.choice(len(planes_t), size=batch_size, p=weights):
            plane = planes_t[index]
            top = int(rng.integers(0, plane.shape[0] - patch + 1))
            left = int(rng.integers(0, plane.shape[1] - patch + 1))
            crop = plane[top:top + patch, left:left + patch]
            if rng.random() < 0.5:
                crop = crop.flip(1)
            out.append(torch.rot90(crop, int(rng.integers(0, 4))))
        return torch.stack(out)[:, None]

    net.train()
    began = time.perf_counter()
    recent: list[float] = []
    for step in range(steps):
        fraction = min(1.0, step / anneal_steps)
        sa = start + (end - start) * fraction
        loss = ardae_loss(net, net.to_domain(batch()), sa, torch_gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        recent = (recent + [loss.item()])[-50:]
        if log and (step % 100 == 0 or step == steps - 1):
            log(f"{noise.slug} step {step + 1}/{steps} loss {np.mean(recent):.4f} sigma_a {sa:.4g}")
    net.eval()
    record = {
        "family": noise.family, "level": noise.level, "width": width, "steps": steps, "seed": seed,
        "batch_size": batch_size, "patch": patch, "lr": lr, "sigma_a": [start, end],
        "loss_last50": float(np.mean(recent)) if recent else None,
        "train_seconds": round(time.perf_counter() - began, 1), "images": names,
        "clean_images_corrupted_here": clean, "torch": torch.__version__,
    }
    net.training_record = record  # type: ignore[attr-defined]
    if out_path is not None:
        save_checkpoint(out_path, {noise.slug: net}, merge=True)
    return net


def save_checkpoint(path: str | Path, nets: dict[str, Noise2ScoreNet], *, merge: bool = True) -> Path:
    """Write networks to a safetensors file (never a pickle); ``merge`` keeps the file's other
    settings."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    entries: dict[str, dict] = {}
    if merge and path.exists():
        old_tensors, old_entries = _read(path)
        tensors.update({k: v for k, v in old_tensors.items() if k.split("/", 1)[0] not in nets})
        entries.update({k: v for k, v in old_entries.items() if k not in nets})
    for key, net in nets.items():
        for name, value in net.net.state_dict().items():
            tensors[f"{key}/{name}"] = value.detach().float().contiguous().clone()
        entries[key] = dict(getattr(net, "training_record", {}),
                            family={0: "gaussian", 1: "poisson", 2: "gamma"}[net.family],
                            level=net.level, width=net.net.enc0[0].out_channels)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": CHECKPOINT_FORMAT, "entries": json.dumps(entries, sort_keys=True)})
    path.chmod(0o644)  # safetensors writes 0600; a sandbox user must be able to read shipped weights
    return path


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        if metadata.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint")
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    return tensors, json.loads(metadata["entries"])


def checkpoint_entries(path: str | Path = SHIPPED_CHECKPOINT) -> dict[str, dict]:
    """The training record of every setting in a checkpoint, keyed by noise slug."""
    return _read(Path(path))[1]


def load_noise2score_nets(path: str | Path = SHIPPED_CHECKPOINT) -> dict[str, Noise2ScoreNet]:
    tensors, entries = _read(Path(path))
    nets = {}
    for key, entry in entries.items():
        net = Noise2ScoreNet(entry["family"], float(entry["level"]), int(entry["width"]))
        prefix = f"{key}/"
        net.net.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        net.training_record = entry  # type: ignore[attr-defined]
        nets[key] = net.eval()
    return nets


def load_noise2score(path: str | Path = SHIPPED_CHECKPOINT) -> Noise2ScoreDenoiser:
    """Every setting in a checkpoint as one denoiser module (wants the noise level)."""
    nets = load_noise2score_nets(path)
    return Noise2ScoreDenoiser([nets[k] for k in sorted(nets)]).eval()


def train_shipped_checkpoint(out_path: str | Path = SHIPPED_CHECKPOINT, *, steps: int = 1000, seed: int = 0,
                             threads: int | None = None, log: Callable[[str], None] | None = print) -> Path:
    """Rebuild the shipped checkpoint: the six protocol settings, each trained for ``steps`` steps
    on noisy copies of the bundled training photographs (runner.datasets.denoise.training_images,
    none of which is in a skimage test set)."""
    from runner.datasets.denoise import training_images


    images = training_images(channels=1)
    out_path = Path(out_path)
    if out_path.exists():
        out_path.unlink()
    for i, noise in enumerate(PROTOCOL_SETTINGS):
        train_noise2score(images, family=noise.family, level=noise.level, steps=steps, seed=seed + i,
                          out_path=out_path, clean=True, threads=threads, log=log)
    return out_path
