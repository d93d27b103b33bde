"""Reference classifiers: model files the site submits as baselines, listed in baselines.json,
and the export of torchvision architectures (`runner baselines export`).

baselines.json: ``{"schema": 1, "about": str, "baselines": [entry, ...]}``; each entry has
``file`` (beside the manifest), ``name``, ``display_name``, ``family``, ``description``,
``format`` (torchscript | onnx), ``benchmark`` and ``tasks`` (catalogue slugs it is scored on),
``hparams`` (the submission's hyperparameters, ``{}``), ``sha256``, ``size`` (bytes),
``parameters``, ``input`` (the contract it was exported for), ``expected_metrics``
(``{task: {metric: value}}`` as the runner scored it when the file was made) and
``trained_with`` (the command that rebuilds it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).parent
MANIFEST = FOLDER / "baselines.json"


def manifest() -> list[dict[str, Any]]:
    """The manifest's entries; ``path`` added (absolute)."""
    entries = json.loads(MANIFEST.read_text(encoding="utf-8"))["baselines"]
    return [{**entry, "path": str(FOLDER / entry["file"])} for entry in entries]
