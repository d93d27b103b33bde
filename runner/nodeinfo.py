"""What `runner check` reports: versions, device, sandbox, datasets, supported tasks."""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import runner
from runner import datasets
from runner.evaluate import supported_tasks
from runner.sandbox import sandbox_available


def node_report(data_root: Path | str) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    sandbox = sandbox_available()
    present = set(datasets.present(data_root))
    return {
        "runner": runner.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "sandbox": {"available": sandbox.available, "detail": sandbox.detail},
        "data_root": str(data_root),
        "datasets": {name: name in present for name in datasets.known()},
        "tasks": list(supported_tasks()),
    }
