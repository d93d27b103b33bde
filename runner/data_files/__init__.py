"""Class lists and constants the dataset readers and metrics need, copied from the project's
shared/data/ so the runner package is self-contained. Each JSON file names its source."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


@cache
def load(name: str) -> dict[str, Any]:
    """The parsed ``<name>.json`` beside this module (cached; treat it as read-only)."""
    return json.loads((HERE / f"{name}.json").read_text(encoding="utf-8"))


@cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1,000 ImageNet wnids; class index i is position i (the sorted order)."""
    return tuple(load("imagenet_wnids")["wnids"])


@cache
def imagenet_index() -> dict[str, int]:
    return {wnid: i for i, wnid in enumerate(imagenet_wnids())}


@cache
def subset_wnids(name: str) -> tuple[str, ...]:
    """The 200 wnids of ``imagenet_a`` or ``imagenet_r``, ascending; label j is position j."""
    return tuple(load(name)["wnids"])


@cache
def subset_indices(name: str) -> tuple[int, ...]:
    """The 1k-indices of ``imagenet_a`` or ``imagenet_r`` (ascending): the logit columns to keep."""
    return tuple(load(name)["indices_in_1k"])
