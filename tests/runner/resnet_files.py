"""A torchvision ResNet-18 for CIFAR-10 as the two submissions issue 19 compares: its state dict
as .safetensors (with the hyperparameters that name its architecture and preprocessing) and the
same network, preprocessing inside, exported with torch.export (.pt2)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchvision
from safetensors.torch import save_file

CIFAR_MEAN = [0.4914, 0.4822, 0.4465]
CIFAR_STD = [0.247, 0.2435, 0.2616]
HPARAMS: dict[str, Any] = {"architecture": "torchvision:resnet18", "num_classes": 10, "mean": CIFAR_MEAN,
                           "std": CIFAR_STD}


class Normalized(torch.nn.Module):
    """What a researcher exports: the network behind its own preprocessing."""

    def __init__(self, net: torch.nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def resnet18(seed: int = 0, num_classes: int = 10) -> torch.nn.Module:
    """torchvision's ResNet-18 with its own initialisation under ``seed``, BatchNorm statistics
    moved off their defaults (so a file that lost them would score differently), in eval mode."""
    torch.manual_seed(seed)
    net = torchvision.models.resnet18(num_classes=num_classes)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return net.eval()


def save_both(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """``(resnet18.safetensors, resnet18.pt2)`` of one network in ``folder``."""
    net = resnet18(seed)
    weights = folder / "resnet18.safetensors"
    save_file(net.state_dict(), weights)
    program = torch.export.export(Normalized(net, CIFAR_MEAN, CIFAR_STD).eval(), (torch.rand(2, 3, 32, 32),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    exported = folder / "resnet18.pt2"
    torch.export.save(program, exported)
    return weights, exported
