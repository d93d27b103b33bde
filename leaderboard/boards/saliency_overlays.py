"""Saliency overlays of the failure explorer (issue 17 item 5, the site side): a classifier
result's ``saliency`` entry read strictly, and each map as a colour-mapped PNG with alpha that the
explorer lays over the image's thumbnail.

The entry is written by the trusted runner (runner/saliency_sample.py's docstring gives the
format) but the site treats it as data: :func:`read` checks every field it uses and raises
:class:`SaliencyError` naming what is wrong, and the pages then show "no saliency" (never a 500).
The site does not import the runner's decoder (the site image copies only a few runner files,
deploy/Dockerfile.site); the maps are ``np.frombuffer(base64.b64decode(maps), uint8)`` reshaped
to [M, S, S], M = len(rows), S = side, value/255 the per-image min-max-normalized saliency.

The overlay (:func:`overlay_png`): each map cell is repeated :data:`UPSAMPLE` × :data:`UPSAMPLE`
times (nearest neighbour: the map's own resolution stays visible, nothing is interpolated that the
runner did not compute), coloured on a yellow-to-red ramp (R = 255, G = 255 − v, B = 0 for cell
value v in 0..255) with alpha = round(v · :data:`ALPHA_MAX` / 255), so the least salient cells are
transparent and the most salient mostly opaque red.
"""
from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runner.spec import finite_float

from .difficulty import png_bytes

FORMAT = 1
MAX_SIDE = 64
MAX_MAPS = 4096
UPSAMPLE = 4
ALPHA_MAX = 180
METHOD_NAMES = {
    "gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "smooth-gradcam++": "Smooth Grad-CAM++",
    "normgrad": "NormGrad", "smoothgrad": "SmoothGrad (input gradient)", "occlusion": "occlusion",
}


class SaliencyError(ValueError):
    """A result's ``saliency`` entry that does not follow format 1 (the message says which field)."""


@dataclass(frozen=True)
class Overlays:
    """A result's saliency maps: ``maps`` uint8 [M, S, S]; ``rows`` [M], rows of the per-image
    file; ``index`` [M] the images' dataset index (None when the entry has none); the method,
    its layer (CAM methods) and parameters as recorded; ``error`` the runner's note when the
    model server stopped (M may then be 0); ``seconds`` and ``budget_s`` on the runner's clock."""

    maps: np.ndarray
    rows: list[int]
    index: list[int] | None
    method: str | None
    layer: str | None
    params: list[tuple[str, str]]
    error: str | None
    seconds: float | None
    budget_s: float | None
    at_row: dict[int, int] = field(default_factory=dict)

    @property
    def method_name(self) -> str:
        """The method as a reader knows it ("Grad-CAM++"), or "unrecorded method"."""
        if self.method is None:
            return "unrecorded method"
        return METHOD_NAMES.get(self.method, self.method)

    def position(self, row: int, index: int) -> int | None:
        """The map of per-image row ``row`` whose image is ``index``, or None when it has none
        (or the entry says that row is another image: then no map is better than a wrong one)."""
        m = self.at_row.get(row)
        if m is None or (self.index is not None and self.index[m] != index):
            return None
        return m


def _int_list(value: Any, name: str, count: int | None = None) -> list[int]:
    if not isinstance(value, list) or not all(type(v) is int for v in value):
        raise SaliencyError(f"saliency.{name} is not a list of integers")
    if count is not None and len(value) != count:
        raise SaliencyError(f"saliency.{name} has {len(value)} entries, not {count}")
    return value


def _number(value: Any, name: str) -> float | None:
    if value is None:
        return None
    number = finite_float(value)
    if number is None or number < 0:
        raise SaliencyError(f"saliency.{name} is not a non-negative number")
    return number


def _text(value: Any, name: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise SaliencyError(f"saliency.{name} is not text")
    return value[:limit]


def _scalar(value: Any) -> str:
    if type(value) is bool:
        return str(value).lower()
    if type(value) is int:
        return str(value)
    if type(value) is float:
        return f"{value:.4g}"
    if isinstance(value, str):
        return value[:80]
    raise SaliencyError(f"a saliency parameter holds {type(value).__name__}, not a number or text")


def _params(value: Any) -> list[tuple[str, str]]:
    """The parameters as (name, shown value) pairs in the recorded order: scalars, or lists of
    scalars (at most 8 items shown)."""
    if value is None:
        return []
    if not isinstance(value, dict) or len(value) > 32:
        raise SaliencyError("saliency.params is not an object of at most 32 parameters")
    shown = []
    for key, item in value.items():
        if isinstance(item, list):
            text = "[" + ", ".join(_scalar(v) for v in item[:8]) + (", …" if len(item) > 8 else "") + "]"
        else:
            text = _scalar(item)
        shown.append((str(key)[:40], text))
    return shown


def read(result: Mapping[str, Any] | None) -> Overlays | None:
    """The saliency entry of a result document, or None when it has none (saliency off, or a
    result from before the runner computed maps). Raises SaliencyError when it is malformed: not
    format 1, a side outside 1..MAX_SIDE, ``maps`` not base64 of exactly len(rows)·side² bytes,
    ``rows`` not distinct non-negative integers, ``index`` of another length, or a method, layer,
    parameter, error or time of the wrong type."""
    if not isinstance(result, Mapping) or result.get("saliency") is None:
        return None
    entry = result["saliency"]
    if not isinstance(entry, Mapping):
        raise SaliencyError("saliency is not an object")
    if entry.get("format") != FORMAT or type(entry.get("format")) is not int:
        raise SaliencyError(f"saliency.format is {entry.get('format')!r}, not {FORMAT}")
    side = entry.get("side")
    if type(side) is not int or not 1 <= side <= MAX_SIDE:
        raise SaliencyError(f"saliency.side is {side!r}, not an integer in 1..{MAX_SIDE}")
    rows = _int_list(entry.get("rows"), "rows")
    if len(rows) > MAX_MAPS or any(r < 0 for r in rows) or len(set(rows)) != len(rows):
        raise SaliencyError(f"saliency.rows are not at most {MAX_MAPS} distinct non-negative rows")
    index = _int_list(entry["index"], "index", len(rows)) if entry.get("index") is not None else None
    encoded = entry.get("maps")
    if not isinstance(encoded, str):
        raise SaliencyError("saliency.maps is not base64 text")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SaliencyError(f"saliency.maps is not base64: {exc}") from None
    if len(raw) != len(rows) * side * side:
        raise SaliencyError(f"saliency.maps holds {len(raw)} bytes, not {len(rows)}×{side}×{side}")
    maps = np.frombuffer(raw, dtype=np.uint8).reshape(len(rows), side, side)
    method = _text(entry.get("method"), "method", 40)
    return Overlays(
        maps=maps, rows=rows, index=index, method=method, layer=_text(entry.get("layer"), "layer", 200),
        params=_params(entry.get("params")), error=_text(entry.get("error"), "error", 600),
        seconds=_number(entry.get("seconds"), "seconds"), budget_s=_number(entry.get("budget_s"), "budget_s"),
        at_row={r: m for m, r in enumerate(rows)},
    )


def colour(values: np.ndarray) -> np.ndarray:
    """uint8 RGBA [..., 4] of saliency values uint8 [...]: R 255, G 255 − v, B 0, alpha
    round(v · ALPHA_MAX / 255)."""
    v = values.astype(np.uint16)
    rgba = np.empty((*values.shape, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 1] = 255 - v
    rgba[..., 2] = 0
    rgba[..., 3] = (v * ALPHA_MAX + 127) // 255
    return rgba


def overlay_png(saliency_map: np.ndarray) -> bytes:
    """The PNG (8-bit RGBA, (S·UPSAMPLE)²) of one map, uint8 [S, S]: each cell repeated
    UPSAMPLE × UPSAMPLE times, then :func:`colour`."""
    big = np.repeat(np.repeat(np.asarray(saliency_map, dtype=np.uint8), UPSAMPLE, axis=0), UPSAMPLE, axis=1)
    return png_bytes(colour(big))
