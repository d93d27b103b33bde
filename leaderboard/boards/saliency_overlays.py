"""Saliency overlays of the failure explorer (issue 17 item 5, the site side): a classifier
result's ``saliency`` entry read strictly, and each map as a colour-mapped PNG with alpha that the
explorer lays over the image's thumbnail.

The entry is written by the trusted runner (runner/saliency_sample.py's docstring gives the
format) but the site treats it as data: :func:`read` checks every field it uses and raises
:class:`SaliencyError` naming what is wrong, and the pages then show "no saliency" (never a 500).
Two formats are read: 1 (one method: ``method``, ``layer``, ``params``, ``maps`` at the top level,
aligned with ``rows``) and 2 (``methods``: one object per method with its own ``rows``, a subset
of the top level's, and ``maps``, plus ``seconds`` and ``skipped`` or ``error``). Both become
:class:`Overlays`, a list of :class:`MethodMaps`; every map of the entry has one *position*
(the methods' maps one after the other), the number in its PNG's address.
The site does not import the runner's decoder (the site image copies only a few runner files,
deploy/Dockerfile.site); the maps are ``np.frombuffer(base64.b64decode(maps), uint8)`` reshaped
to [m, S, S], S = side, value/255 the per-image min-max-normalized saliency.

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

FORMATS = (1, 2)
MAX_SIDE = 64
MAX_MAPS = 4096
MAX_METHODS = 8  # the explorer's selector has this many slots (static/css/site.css)
UPSAMPLE = 4
ALPHA_MAX = 180
METHOD_NAMES = {
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "smooth-gradcam++": "Smooth Grad-CAM++",
    "normgrad": "NormGrad",
    "smoothgrad": "SmoothGrad (input gradient)",
    "occlusion": "occlusion",
}


class SaliencyError(ValueError):
    """A result's ``saliency`` entry that follows neither format (the message says which field)."""


@dataclass(frozen=True)
class MethodMaps:
    """One method's maps: ``maps`` uint8 [m, S, S] aligned with ``rows`` (rows of the per-image
    file); ``offset`` the position of its first map in the entry; ``slot`` its place in the
    selector; the method, its layer (CAM methods) and parameters as recorded; ``seconds`` its time;
    ``skipped`` why the runner did not run it, ``error`` why it stopped (m may then be 0)."""

    slot: int
    offset: int
    maps: np.ndarray
    rows: list[int]
    method: str | None
    layer: str | None
    params: list[tuple[str, str]]
    seconds: float | None
    skipped: str | None
    error: str | None
    at_row: dict[int, int] = field(default_factory=dict)

    @property
    def method_name(self) -> str:
        """The method as a reader knows it ("Grad-CAM++"), or "unrecorded method"."""
        if self.method is None:
            return "unrecorded method"
        return METHOD_NAMES.get(self.method, self.method)


@dataclass(frozen=True)
class Overlays:
    """A result's saliency maps: ``methods`` in the order run; ``maps`` uint8 [M, S, S], every
    method's maps one after the other (a map's position is its index here); ``rows`` and ``index``
    the images that have some map and their dataset index (None when the entry has none);
    ``error`` the runner's note for the whole entry (format 1 has none: its method's); ``seconds`` and
    ``budget_s`` on the runner's clock, all methods together."""

    methods: list[MethodMaps]
    maps: np.ndarray
    rows: list[int]
    index: list[int] | None
    error: str | None
    seconds: float | None
    budget_s: float | None
    index_of_row: dict[int, int] = field(default_factory=dict)

    @property
    def shown(self) -> list[MethodMaps]:
        """The methods that have maps: the selector's choices."""
        return [m for m in self.methods if len(m.rows)]

    def positions(self, row: int, index: int) -> list[tuple[int, int, str]]:
        """(slot, position, method name) of each method's map of per-image row ``row`` whose image
        is ``index``; none when the entry says that row is another image (no map is better than a
        wrong one)."""
        if self.index is not None and self.index_of_row.get(row, index) != index:
            return []
        return [(m.slot, m.offset + m.at_row[row], m.method_name) for m in self.methods if row in m.at_row]

    def position(self, row: int, index: int) -> int | None:
        """The first method's map of ``row`` (as :meth:`positions`), or None."""
        found = self.positions(row, index)
        return found[0][1] if found else None


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


def _maps(encoded: Any, count: int, side: int, name: str) -> np.ndarray:
    if not isinstance(encoded, str):
        raise SaliencyError(f"saliency.{name} is not base64 text")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SaliencyError(f"saliency.{name} is not base64: {exc}") from None
    if len(raw) != count * side * side:
        raise SaliencyError(f"saliency.{name} holds {len(raw)} bytes, not {count}×{side}×{side}")
    return np.frombuffer(raw, dtype=np.uint8).reshape(count, side, side)


def _rows(value: Any, name: str) -> list[int]:
    rows = _int_list(value, name)
    if len(rows) > MAX_MAPS or any(r < 0 for r in rows) or len(set(rows)) != len(rows):
        raise SaliencyError(f"saliency.{name} are not at most {MAX_MAPS} distinct non-negative rows")
    return rows


def _method(
    entry: Mapping[str, Any], *, slot: int, offset: int, side: int, name: str, allowed: set[int] | None
) -> MethodMaps:
    """One method's maps from ``entry`` (a format-2 ``methods`` item, or a format-1 entry)."""
    rows = _rows(entry.get("rows"), f"{name}rows")
    if allowed is not None and not set(rows) <= allowed:
        raise SaliencyError(f"saliency.{name}rows name rows the entry's rows do not")
    return MethodMaps(
        slot=slot,
        offset=offset,
        maps=_maps(entry.get("maps"), len(rows), side, f"{name}maps"),
        rows=rows,
        method=_text(entry.get("method"), f"{name}method", 40),
        layer=_text(entry.get("layer"), f"{name}layer", 200),
        params=_params(entry.get("params")),
        seconds=_number(entry.get("seconds"), f"{name}seconds"),
        skipped=_text(entry.get("skipped"), f"{name}skipped", 600),
        error=_text(entry.get("error"), f"{name}error", 600),
        at_row={r: m for m, r in enumerate(rows)},
    )


def read(result: Mapping[str, Any] | None) -> Overlays | None:
    """The saliency entry of a result document, or None when it has none (saliency off, or a
    result from before the runner computed maps). Raises SaliencyError when it is malformed: not
    format 1 or 2, a side outside 1..MAX_SIDE, ``rows`` not distinct non-negative integers,
    ``index`` of another length, ``maps`` not base64 of exactly len(rows)·side² bytes, a format-2
    ``methods`` not a list of at most MAX_METHODS objects whose rows are the entry's, or a method,
    layer, parameter, error or time of the wrong type."""
    if not isinstance(result, Mapping) or result.get("saliency") is None:
        return None
    entry = result["saliency"]
    if not isinstance(entry, Mapping):
        raise SaliencyError("saliency is not an object")
    version = entry.get("format")
    if type(version) is not int or version not in FORMATS:
        raise SaliencyError(f"saliency.format is {version!r}, not one of {', '.join(map(str, FORMATS))}")
    side = entry.get("side")
    if type(side) is not int or not 1 <= side <= MAX_SIDE:
        raise SaliencyError(f"saliency.side is {side!r}, not an integer in 1..{MAX_SIDE}")
    rows = _rows(entry.get("rows"), "rows")
    index = _int_list(entry["index"], "index", len(rows)) if entry.get("index") is not None else None
    if version == 1:
        methods = [_method(entry, slot=0, offset=0, side=side, name="", allowed=None)]
        error = None  # format 1's error is its one method's
    else:
        items = entry.get("methods")
        if (
            not isinstance(items, list)
            or len(items) > MAX_METHODS
            or not all(isinstance(m, Mapping) for m in items)
        ):
            raise SaliencyError(f"saliency.methods is not a list of at most {MAX_METHODS} objects")
        methods, offset = [], 0
        for slot, item in enumerate(items):
            one = _method(
                item, slot=slot, offset=offset, side=side, name=f"methods.{slot}.", allowed=set(rows)
            )
            methods.append(one)
            offset += len(one.rows)
        if offset > MAX_MAPS:
            raise SaliencyError(f"saliency.methods hold {offset} maps, more than {MAX_MAPS}")
        error = _text(entry.get("error"), "error", 600)
    maps = np.concatenate([m.maps for m in methods]) if methods else np.zeros((0, side, side), np.uint8)
    return Overlays(
        methods=methods,
        maps=maps,
        rows=rows,
        index=index,
        error=error,
        seconds=_number(entry.get("seconds"), "seconds"),
        budget_s=_number(entry.get("budget_s"), "budget_s"),
        index_of_row=dict(zip(rows, index, strict=True)) if index is not None else {},
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
