"""Export torchvision classification architectures as TorchScript classifier submissions
(`runner baselines export`): float32 NCHW input in [0, 1] at 224×224, the ImageNet normalization
inside the module, logits [N, 1000] out.

Pretrained weights come from torchvision's download (they need a network, or a copy already in
``$TORCH_HOME/hub/checkpoints``). ``random_init`` builds the architecture with random weights for
smoke tests; such a file says so in its embedded ``extra/leaderboard.json`` and must never be
submitted as a baseline.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_INIT_LABEL = "RANDOM INIT (not pretrained): for smoke tests only"


class ExportError(Exception):
    """What stopped an export, said so that a person can act on it."""


def architectures() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _normalized(net: Any) -> Any:
    import torch

    class Normalized(torch.nn.Module):
        """The contract's input ([0, 1]) → ImageNet normalization → the network."""

        def __init__(self, net: torch.nn.Module):
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net((x - self.mean) / self.std)

    return Normalized(net).eval()


def _weights(arch: str, name: str) -> Any:
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(arch)
    except (KeyError, ValueError) as exc:
        raise ExportError(f"torchvision has no weights for {arch!r}") from exc
    try:
        return enum[name] if name != "DEFAULT" else enum.DEFAULT
    except KeyError as exc:
        raise ExportError(
            f"{arch} has no weights {name!r}; choose from: DEFAULT, {', '.join(w.name for w in enum)}"
        ) from exc


def _download_state_dict(weights: Any) -> dict[str, Any]:
    import torch

    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except OSError as exc:  # URLError and every network failure
        raise ExportError(
            f"the {weights} weights need a download from {weights.url}, which failed ({exc}). This machine "
            f"seems to be offline: fetch the file elsewhere and place it at {cached}, or export with "
            "--random-init for a smoke test (labelled random-init, never a baseline)"
        ) from exc
    except RuntimeError as exc:  # a damaged download (hash check)
        raise ExportError(
            f"the downloaded {weights} file is damaged ({exc}); delete {cached} and try again"
        ) from exc


def export_torchvision(
    arch: str, out: Path | str, *, weights: str = "DEFAULT", random_init: bool = False, script: bool = True
) -> dict[str, Any]:
    """Build ``arch`` (pretrained ``weights`` or random), wrap it with the normalization and save
    TorchScript at ``out``; returns the metadata embedded in the file (sha256 and size added)."""
    import torch
    import torchvision

    if arch not in architectures():
        raise ExportError(
            f"torchvision has no classification model {arch!r}; e.g. resnet18, resnet50, "
            "mobilenet_v3_large, efficientnet_b0, convnext_tiny, vit_b_16"
        )
    torch.manual_seed(0)
    net = torchvision.models.get_model(arch, weights=None)
    meta: dict[str, Any] = {
        "arch": arch,
        "torchvision": torchvision.__version__,
        "torch": torch.__version__,
        "input": "float32 [N, 3, 224, 224] in [0, 1]; ImageNet normalization inside",
        "output": "logits [N, 1000]",
    }
    if random_init:
        meta.update(weights="random-init", pretrained=False, label=RANDOM_INIT_LABEL)
    else:
        chosen = _weights(arch, weights)
        net.load_state_dict(_download_state_dict(chosen))
        meta.update(
            weights=str(chosen),
            pretrained=True,
            reported_metrics=dict(chosen.meta.get("_metrics", {}).get("ImageNet-1K", {})),
        )
    model = _normalized(net.eval())
    example = torch.rand(1, 3, 224, 224)
    try:
        compiled = torch.jit.script(model) if script else torch.jit.trace(model, example)
    except Exception:  # noqa: BLE001 - some architectures only trace
        compiled = torch.jit.trace(model, example)
        meta["exported_by"] = "torch.jit.trace (scripting failed)"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(compiled, str(out), _extra_files={"leaderboard.json": json.dumps(meta)})
    data = out.read_bytes()
    return {**meta, "file": str(out), "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
