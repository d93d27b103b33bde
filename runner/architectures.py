"""Architecture + weights submissions (issue 19 item 1), the parts both sides check without torch.

A classifier may be a ``.safetensors`` state dict plus hyperparameters naming a library
architecture and its preprocessing::

    {"architecture": "torchvision:resnet18", "num_classes": 10,
     "mean": [0.4914, 0.4822, 0.4465], "std": [0.247, 0.2435, 0.2616], "pretrained": false}

- :func:`allowed_architectures` ``() -> {"torchvision": frozenset, "timm": frozenset}``: the
  allow-list, ``runner/data_files/architectures.json``, written by ``runner architectures --write``
  from the installed libraries (tests/runner/test_library_models.py checks it still matches them).
  The site never imports torch, so it reads this file instead.
- :func:`check_architecture_hparams` ``(hparams, kind, fmt) -> ArchitectureSpec | None``: the
  hyperparameters' shape (the site at upload, the runner before starting the model server).
- :func:`read_safetensors_header` ``(fh, size) -> {name: (dtype, shape)}``: the file's header,
  every tensor's byte range checked against the file's length, so a header that claims huge
  tensors is refused before anything is allocated.

The architecture is built, and the weights loaded and checked against it (names, shapes,
dtypes), by the sandboxed model server (runner/sandboxed/library_models.py): only the
libraries' own code runs, never submitted code, and it runs in the sandbox all the same.
Pure Python: the site imports this module.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

from runner.spec import SpecError, finite_float

ARCHITECTURES_FILE = Path(__file__).parent / "data_files" / "architectures.json"
LIBRARIES = ("torchvision", "timm")
SAFETENSORS_FORMAT = "safetensors"
# The hyperparameters that describe a .safetensors submission (runner.spec.MODEL_HPARAM_KEYS).
ARCHITECTURE_KEYS = ("architecture", "num_classes", "mean", "std", "pretrained")
# ImageNet-21k has 21,843 classes; a head past this is a typo or an attempt to exhaust memory.
MAX_NUM_CLASSES = 100_000
# safetensors' own reader refuses headers past 100 MB; a ViT-G's header is under 1 MB.
MAX_HEADER_BYTES = 16 << 20
MAX_TENSORS = 100_000
# The dtypes a state dict may hold, with their sizes in bytes. Floating weights are cast to the
# architecture's float32 (float16 / bfloat16 exactly, float64 rounded); integer ones only where
# the architecture has an integer buffer (BatchNorm's num_batches_tracked).
FLOAT_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}
INT_DTYPES = {"I64": 8, "I32": 4}
DTYPE_BYTES = {**FLOAT_DTYPES, **INT_DTYPES}
NO_LIBRARY_DENOISERS = (
    "no library the runner ships (torchvision, timm) has a denoising architecture, so a denoiser "
    "cannot be a .safetensors weights file: export it instead (torch.export .pt2, ONNX or TorchScript)"
)


@dataclass(frozen=True)
class ArchitectureSpec:
    """A checked architecture: ``library`` ("torchvision" | "timm"), ``name`` (one of the
    library's classifier builders), ``num_classes`` (1..MAX_NUM_CLASSES), ``mean`` and ``std``
    (3 floats each, per RGB channel, applied to pixels in [0, 1]: ``(x - mean) / std``) and
    ``pretrained`` (start from the library's published weights)."""

    library: str
    name: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pretrained: bool = False

    @property
    def architecture(self) -> str:
        return f"{self.library}:{self.name}"

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), the model server's ``--architecture`` argument."""
        return json.dumps(
            {"architecture": self.architecture, "num_classes": self.num_classes, "mean": list(self.mean),
             "std": list(self.std), "pretrained": self.pretrained},
            sort_keys=True, separators=(",", ":"),
        )


@lru_cache(maxsize=1)
def allowed_architectures() -> dict[str, frozenset[str]]:
    """Each library's classifier architectures, from ARCHITECTURES_FILE. Raises OSError or
    ValueError when the shipped file is missing or damaged (the platform's fault)."""
    doc = json.loads(ARCHITECTURES_FILE.read_text())
    return {library: frozenset(doc["libraries"][library]["classifiers"]) for library in LIBRARIES}


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _three_floats(hparams: dict[str, Any], key: str, *, positive: bool) -> tuple[float, float, float]:
    value = hparams.get(key)
    if (
        not isinstance(value, list)
        or len(value) != 3
        or any(finite_float(v) is None for v in value)
    ):
        raise SpecError(f"{key} must be 3 numbers, one per RGB channel (got {_short(value)})")
    if positive and any(v <= 0 for v in value):
        raise SpecError(f"std must be 3 positive numbers (got {_short(value)})")
    return (float(value[0]), float(value[1]), float(value[2]))


def check_architecture_hparams(hparams: dict[str, Any], kind: str, fmt: str) -> ArchitectureSpec | None:
    """The architecture a submission of ``kind`` in format ``fmt`` names in ``hparams`` (a JSON
    object), or None for a format that carries its own architecture. Raises SpecError, one line
    blaming the submitter: a .safetensors file of a denoiser; a .safetensors file without
    ``architecture``, or one that is not ``"torchvision:<name>"`` / ``"timm:<name>"`` with a name
    in :func:`allowed_architectures`; ``num_classes`` not an int in 1..MAX_NUM_CLASSES; ``mean`` /
    ``std`` not 3 finite numbers (std positive); ``pretrained`` not a boolean; any of these keys
    beside a TorchScript, .pt2 or ONNX file."""
    given = [k for k in ARCHITECTURE_KEYS if k in hparams]
    if fmt != SAFETENSORS_FORMAT:
        if given:
            raise SpecError(
                f"{', '.join(given)} describe a .safetensors weights file; this file is {fmt}, which "
                "carries its own architecture: leave them out"
            )
        return None
    if kind != "classifier":
        raise SpecError(NO_LIBRARY_DENOISERS)
    architecture = hparams.get("architecture")
    if architecture is None:
        raise SpecError(
            'a .safetensors file holds weights only: name their architecture in the hyperparameters, e.g. '
            '{"architecture": "torchvision:resnet18", "num_classes": 10, "mean": [0.485, 0.456, 0.406], '
            '"std": [0.229, 0.224, 0.225]}'
        )
    if not isinstance(architecture, str) or architecture.count(":") != 1:
        raise SpecError(
            f'architecture must be "torchvision:<name>" or "timm:<name>" (got {_short(architecture)})'
        )
    library, name = architecture.split(":")
    allowed = allowed_architectures()
    if library not in allowed:
        raise SpecError(f"architecture {_short(architecture)}: the library must be torchvision or timm")
    if name not in allowed[library] and library == "timm" and name.split(".", 1)[0] in allowed[library]:
        raise SpecError(
            f"architecture {_short(architecture)}: name timm's architecture without its pretrained tag, "
            f"\"timm:{name.split('.', 1)[0]}\" (add \"pretrained\": true to start from timm's published weights)"
        )
    if name not in allowed[library]:
        raise SpecError(
            f"architecture {_short(architecture)}: {library} has no classifier of that name "
            f"(the names are {library}'s own, e.g. {sorted(allowed[library])[0]!r}; see the submit page)"
        )
    num_classes = hparams.get("num_classes")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 1 <= num_classes <= MAX_NUM_CLASSES:
        raise SpecError(
            f"num_classes must be a whole number from 1 to {MAX_NUM_CLASSES:,} (the task's classes; "
            f"got {_short(num_classes)})"
        )
    mean = _three_floats(hparams, "mean", positive=False)
    std = _three_floats(hparams, "std", positive=True)
    pretrained = hparams.get("pretrained", False)
    if not isinstance(pretrained, bool):
        raise SpecError(f"pretrained must be true or false (got {_short(pretrained)})")
    return ArchitectureSpec(library, name, num_classes, mean, std, pretrained)


def looks_like_safetensors(head: bytes) -> bool:
    """Whether ``head`` (the file's first bytes, at least 9) opens like a safetensors file: a
    little-endian u64 header length, then the JSON header's ``{``."""
    return len(head) >= 9 and head[8:9] == b"{" and struct.unpack_from("<Q", head)[0] >= 2


def read_safetensors_header(fh: BinaryIO, size: int) -> dict[str, tuple[str, list[int]]]:
    """``{tensor name: (dtype, shape)}`` from the safetensors file open at ``fh`` (read from its
    start; ``size``: the file's length in bytes). Checks what the format promises
    (huggingface/safetensors' spec): the header length fits the file and MAX_HEADER_BYTES, the
    header is a JSON object of at most MAX_TENSORS tensors, each with a known dtype (DTYPE_BYTES),
    a shape of at most 8 non-negative dimensions and byte offsets whose length is the shape's,
    and the tensors tile the data that follows the header exactly (no gaps, no overlap, nothing
    past the end). So a header claiming tensors bigger than the file is refused here. Raises
    SpecError naming the first problem."""
    fh.seek(0)
    prefix = fh.read(8)
    if len(prefix) < 8:
        raise SpecError("a .safetensors file shorter than its 8-byte header length")
    (header_len,) = struct.unpack("<Q", prefix)
    if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
        raise SpecError(
            f"the .safetensors header claims {header_len:,} bytes; the file has {size:,} "
            f"(and headers are at most {MAX_HEADER_BYTES:,})"
        )
    raw = fh.read(header_len)
    fh.seek(0)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SpecError(f"the .safetensors header is not JSON: {_short(str(exc), 120)}") from exc
    if not isinstance(header, dict):
        raise SpecError("the .safetensors header must be a JSON object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and (
        not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values())
    ):  # the spec's metadata is a map of strings to strings; safetensors refuses the file otherwise
        raise SpecError("the .safetensors header's __metadata__ must be an object of strings")
    if len(header) > MAX_TENSORS:
        raise SpecError(f"the .safetensors file holds {len(header):,} tensors; at most {MAX_TENSORS:,}")
    data_len = size - 8 - header_len
    tensors: dict[str, tuple[str, list[int]]] = {}
    spans = []
    for name, entry in header.items():
        where = f"tensor {_short(name)}"
        if not isinstance(entry, dict):
            raise SpecError(f"{where}: its header entry is not an object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:  # a list or object is unhashable
            raise SpecError(
                f"{where} is {_short(dtype)}; weights must be floating point (F32, F16, BF16, F64) or "
                "integer buffers (I64, I32)"
            )
        if (
            not isinstance(shape, list)
            or len(shape) > 8
            or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape)
        ):
            raise SpecError(f"{where}: shape {_short(shape)} is not a list of at most 8 sizes")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or any(isinstance(o, bool) or not isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_len
        ):
            raise SpecError(f"{where}: data offsets {_short(offsets)} fall outside the file's {data_len:,} data bytes")
        if math.prod(shape) * DTYPE_BYTES[dtype] != offsets[1] - offsets[0]:
            raise SpecError(
                f"{where}: shape {shape} of {dtype} needs {math.prod(shape) * DTYPE_BYTES[dtype]:,} bytes, "
                f"its offsets hold {offsets[1] - offsets[0]:,}"
            )
        tensors[name] = (dtype, list(shape))
        spans.append((offsets[0], offsets[1]))
    end = 0
    for start, stop in sorted(spans):
        if start != end:
            raise SpecError("the .safetensors tensors overlap or leave gaps in the data")
        end = stop
    if end != data_len:
        raise SpecError(f"the .safetensors tensors cover {end:,} of the file's {data_len:,} data bytes")
    return tensors
