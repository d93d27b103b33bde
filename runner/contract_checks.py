"""The submission contract's implicit assumptions, checked before a model's outputs are scored
(docs/submissions.md lists them all, with the ones that cannot be checked).

A model artifact may carry choices its author never meant as choices: a batch or an image size
fixed by the example input of ``torch.onnx.export`` / ``torch.export.export``, weights in float16,
BatchNorm or Dropout left in training mode, state kept between calls. Each would either fail
half-way through a task with a message from deep inside a runtime, or — worse — give a wrong
number that reaches a board silently. Here:

- :func:`check_input_shape`: the input shapes the model server read from the artifact (ONNX
  graph inputs, an ExportedProgram's example input; TorchScript keeps none) against the task's.
  A fixed batch is fine (the model server splits and pads to it); a fixed channel count or image
  size that differs from the task's is ``invalid_artifact`` at once, with the export fix.
- :func:`probe_classifier` / :func:`probe_denoiser`: a handful of inputs through the running
  model server, three small calls in all, before the task's data: outputs finite and of the
  contract's shape, the same input twice gives the same output (determinism), and a few inputs
  give the same outputs alone as among other inputs (batch independence). A failure is
  ``wrong_output`` saying what differed and the likely cause.

Tolerances are relative to the largest output magnitude: 1e-3 in float32 (different batch sizes
may take different kernels, on GPUs especially), 3e-2 for float16 / bfloat16 weights or bf16
autocast. A model whose outputs move by more than that with its batch-mates changes the score
with the runner's batch size (256 on CPU, 1024 on GPU).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runner.spec import ErrorKind, EvaluationError

PROBE_ITEMS = 8  # classifier inputs in the mixed batch
ALONE_ITEMS = 4  # of which this many also run as a batch of their own (in reverse order)
DENOISE_CROP = 64  # pixels a side of the crops a denoiser is probed with
DENOISE_CROPS = 2
FP32_TOLERANCE = 1e-3
LOW_PRECISION_TOLERANCE = 3e-2
LOW_PRECISION = ("float16", "bfloat16", "half")

BATCH_DEPENDENT_CAUSE = (
    "BatchNorm in training mode? call model.eval() before exporting (and trace or export the "
    "eval-mode model); a model's outputs for one image must not depend on the other images in "
    "the batch"
)
NONDETERMINISTIC_CAUSE = (
    "Dropout in training mode, a random operation, or state kept between calls? call "
    "model.eval() before exporting; the same input must give the same output"
)


@dataclass
class ProbeReport:
    """What the probe checked (for the result's env) and the seconds it took (for its timing)."""

    checked: list[str] = field(default_factory=list)
    skipped: str | None = None
    seconds: float = 0.0

    def env(self) -> dict[str, Any]:
        return {"checked": list(self.checked), **({"skipped": self.skipped} if self.skipped else {})}


# --------------------------------------------------------------------------------------------
# Input shapes read from the artifact.
# --------------------------------------------------------------------------------------------
def _export_fix(fmt: str, dims: str) -> str:
    if fmt == "onnx":
        axes = {"batch": '{0: "n"}', "image": '{0: "n", 2: "h", 3: "w"}'}[dims]
        return (
            "export with an example input of the task's shape, or leave the dimensions dynamic: "
            f'torch.onnx.export(model, (x,), path, input_names=["x"], dynamic_axes={{"x": {axes}}})'
        )
    if fmt == "pt2":
        shapes = {
            "batch": '{0: Dim("n")}',
            "image": '{0: Dim("n"), 2: Dim("h"), 3: Dim("w")}',
        }[dims]
        return (
            "export with an example input of the task's shape, or leave the dimensions dynamic: "
            f"torch.export.export(model, (x,), dynamic_shapes=({shapes},))"
        )
    return "export the model for inputs of the task's shape"


def _shape_text(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("*" if d is None else str(d) for d in shape) + "]"


def check_input_shape(
    info: dict[str, Any], fmt: str, *, task: str, channels: int, sizes: Sequence[tuple[int, int]]
) -> None:
    """INVALID_ARTIFACT at once when the model's first input, as the artifact fixes it, cannot
    take the task's images: not four dimensions, or a fixed channel count, height or width other
    than the task's (``sizes`` are the task's (H, W); a denoising set has several). A fixed batch
    is allowed: the model server fits every batch to it."""
    shapes = info.get("input_shapes")
    if not shapes or not shapes[0]:
        return  # TorchScript: nothing to read before running
    shape = list(shapes[0])
    what = "ONNX graph's input" if fmt == "onnx" else "exported program's input"
    if len(shape) != 4:
        raise EvaluationError(
            ErrorKind.INVALID_ARTIFACT,
            f"the {what} has {len(shape)} dimensions {_shape_text(shape)}; {task} gives images as "
            f"[N, C, H, W] float32 in [0, 1] (flatten inside the model); "
            + _export_fix(fmt, "batch"),
        )
    _, c, h, w = shape
    if c is not None and c != channels:
        raise EvaluationError(
            ErrorKind.INVALID_ARTIFACT,
            f"the {what} is fixed at {_shape_text(shape)}: {c} channels, but {task} gives "
            f"{channels}-channel images; export the model for {channels} channels",
        )
    wrong = sorted({(hh, ww) for hh, ww in sizes if (h is not None and h != hh) or (w is not None and w != ww)})
    if wrong:
        listed = ", ".join(f"{hh}×{ww}" for hh, ww in wrong[:3]) + (" …" if len(wrong) > 3 else "")
        raise EvaluationError(
            ErrorKind.INVALID_ARTIFACT,
            f"the {what} is fixed at {_shape_text(shape)}, but {task} gives images of {listed} "
            "pixels; " + _export_fix(fmt, "image"),
        )


def batch_note(info: dict[str, Any]) -> str | None:
    """What the result's env says about a model that takes only some batch sizes."""
    low, high = int(info.get("batch_min") or 1), info.get("batch_max")
    if high is not None and int(high) == low:
        return f"fixed at {low} by the export: batches split to {low} and the last padded (padding dropped)"
    if low > 1 or high is not None:
        return f"{low} to {high or 'any'} items by the export: batches split and padded to fit"
    return None


# --------------------------------------------------------------------------------------------
# Probing the running model.
# --------------------------------------------------------------------------------------------
def tolerance(info: dict[str, Any], precision: str) -> float:
    """The relative tolerance two runs of the same input may differ by (see the module docstring)."""
    dtypes = [str(d) for d in info.get("input_dtypes") or [] if d]
    low = precision == "bf16" or any(d in LOW_PRECISION for d in dtypes)
    return LOW_PRECISION_TOLERANCE if low else FP32_TOLERANCE


def _run(server: Any, inputs: list[np.ndarray], *, deadline: float | None, cancel: Any) -> np.ndarray:
    """One call of the model server on ``inputs`` (one batch, never split); the output."""
    got: list[tuple[int, np.ndarray]] = []

    def collect(tag: Any, lo: int, hi: int, outputs: np.ndarray) -> None:
        got.append((lo, np.array(outputs)))  # in pieces when an out-of-memory answer split it

    server.stream([(inputs, None)], collect, max_items=len(inputs[0]), deadline=deadline, cancel=cancel)
    if not got:
        raise EvaluationError(ErrorKind.RUNNER_ERROR, "the contract probe got no answer from the model server")
    parts = [out for _, out in sorted(got, key=lambda item: item[0])]
    if len(parts) == 1:
        return parts[0]
    if len({(p.ndim, p.shape[1:], p.dtype) for p in parts}) != 1:
        raise EvaluationError(
            ErrorKind.WRONG_OUTPUT,
            f"the model returned outputs of shapes {[list(p.shape) for p in parts]} for parts of one batch",
        )
    return np.concatenate(parts)


def _worst(a: np.ndarray, b: np.ndarray, scale: float) -> float:
    """The largest difference between ``a`` and ``b`` relative to ``scale``."""
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) / max(scale, 1e-12)


def _compare(
    a: np.ndarray, b: np.ndarray, tol: float, what: str, cause: str, unit: str
) -> None:
    scale = float(np.max(np.abs(a))) if a.size else 0.0
    if scale == 0.0 and b.size:
        scale = float(np.max(np.abs(b)))
    worst = _worst(a, b, scale)
    if worst > tol:
        raise EvaluationError(
            ErrorKind.WRONG_OUTPUT,
            f"{what}: {unit} moved by up to {100 * worst:.3g}% of the largest output "
            f"(tolerance {100 * tol:.3g}%). {cause}",
        )


def probe_classifier(
    server: Any,
    images: np.ndarray,
    *,
    check_outputs: Any,
    tol: float,
    deadline: float | None = None,
    cancel: Any = None,
) -> ProbeReport:
    """Check a classifier on the task's first images (float32 ``[m, C, H, W]``, m ≥ 1) before
    the task runs; ``check_outputs(outputs, n)`` is the track's own output check (shape [n, C],
    floats, finite: WRONG_OUTPUT / NOT_FINITE).

    1. The first ``PROBE_ITEMS`` images as one batch; its outputs checked.
    2. The first ``ALONE_ITEMS`` of them, reversed, as a batch of their own: must match (1).
    3. (2) again: must match (2) exactly up to the tolerance (determinism).
    Raises WRONG_OUTPUT on a mismatch, with the likely cause and what to do."""
    started = time.perf_counter()
    report = ProbeReport()
    mixed = np.ascontiguousarray(images[:PROBE_ITEMS], dtype=np.float32)
    alone_n = min(ALONE_ITEMS, len(mixed) - 1)
    out_mixed = _run(server, [mixed], deadline=deadline, cancel=cancel)
    check_outputs(out_mixed, len(mixed))
    report.checked.append("outputs")
    if alone_n >= 1:
        alone = np.ascontiguousarray(mixed[:alone_n][::-1])
        out_alone = _run(server, [alone], deadline=deadline, cancel=cancel)
        check_outputs(out_alone, alone_n)
        again = _run(server, [alone], deadline=deadline, cancel=cancel)
        check_outputs(again, alone_n)
        _compare(
            out_alone, again, tol,
            f"the model gave different logits for the same {alone_n} images run twice",
            NONDETERMINISTIC_CAUSE, "logits",
        )
        report.checked.append("deterministic")
        _compare(
            out_mixed[:alone_n][::-1], out_alone, tol,
            f"its outputs depend on the other images in the batch: {alone_n} images run as a batch "
            f"of their own got other logits than inside a batch of {len(mixed)}",
            BATCH_DEPENDENT_CAUSE, "logits",
        )
        report.checked.append("batch_independent")
    report.seconds = time.perf_counter() - started
    return report


def denoiser_crops(images: Sequence[np.ndarray], fixed: tuple[int | None, int | None]) -> np.ndarray:
    """Float32 ``[k, C, s, s]`` centre crops of the first images (HWC) to probe a denoiser with:
    ``s`` = DENOISE_CROP (smaller images: their size), or the whole images when the model fixes
    the image size."""
    if fixed[0] is not None or fixed[1] is not None:
        chosen = [im for im in images if im.shape[:2] == images[0].shape[:2]][:DENOISE_CROPS]
        return np.ascontiguousarray(np.stack([im.transpose(2, 0, 1) for im in chosen]), dtype=np.float32)
    chosen = list(images[:DENOISE_CROPS])
    side = min([DENOISE_CROP] + [min(im.shape[:2]) for im in chosen])
    crops = []
    for im in chosen:
        top, left = (im.shape[0] - side) // 2, (im.shape[1] - side) // 2
        crops.append(im[top : top + side, left : left + side].transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(crops), dtype=np.float32)


def probe_denoiser(
    server: Any,
    crops: np.ndarray,
    level: np.ndarray | None,
    *,
    tol: float,
    deadline: float | None = None,
    cancel: Any = None,
) -> ProbeReport:
    """Check a denoiser on a few noisy crops (float32 ``[k, C, s, s]``; ``level`` the ``[1, 2]``
    noise-level row for a model that wants it) before the task runs:

    1. the k crops as one batch: output of the input's shape, floats, finite;
    2. the first crop alone, twice: the same both times (determinism), and the same as in (1)
       (batch independence).

    Raises WRONG_OUTPUT / NOT_FINITE. A model that raises on the crops is not judged here (it may
    need larger images): the report says the probe was skipped and the task's own run decides."""
    started = time.perf_counter()
    report = ProbeReport()

    def inputs(batch: np.ndarray) -> list[np.ndarray]:
        return [batch] if level is None else [batch, np.repeat(level, len(batch), axis=0)]

    def check(out: np.ndarray, expected: tuple[int, ...]) -> None:
        if tuple(out.shape) != expected:
            raise EvaluationError(
                ErrorKind.WRONG_OUTPUT,
                f"the denoiser returned shape {list(out.shape)} for noisy crops of shape "
                f"{list(expected)}; the contract is the input's shape [N, C, H, W]",
            )
        if not np.issubdtype(out.dtype, np.floating):
            raise EvaluationError(ErrorKind.WRONG_OUTPUT, f"the denoiser returned {out.dtype}; return float32 pixels")
        if not np.isfinite(out).all():
            raise EvaluationError(ErrorKind.NOT_FINITE, "the denoiser returned NaN or infinite values")

    try:
        batch_out = _run(server, inputs(crops), deadline=deadline, cancel=cancel)
    except EvaluationError as exc:
        if exc.kind not in (ErrorKind.RUNTIME_ERROR, ErrorKind.OUT_OF_MEMORY):
            raise
        report.skipped = f"the model did not take {crops.shape[2]}×{crops.shape[3]} crops"
        report.seconds = time.perf_counter() - started
        return report
    check(batch_out, tuple(crops.shape))
    report.checked.append("outputs")
    first = crops[:1]
    alone = _run(server, inputs(first), deadline=deadline, cancel=cancel)
    check(alone, tuple(first.shape))
    again = _run(server, inputs(first), deadline=deadline, cancel=cancel)
    _compare(alone, again, tol, "the denoiser gave different outputs for the same noisy crop run twice",
             NONDETERMINISTIC_CAUSE, "pixels")
    report.checked.append("deterministic")
    if len(crops) > 1:
        _compare(
            batch_out[:1], alone, tol,
            f"its outputs depend on the other images in the batch: a noisy crop run alone got other "
            f"pixels than inside a batch of {len(crops)}",
            BATCH_DEPENDENT_CAUSE, "pixels",
        )
        report.checked.append("batch_independent")
    report.seconds = time.perf_counter() - started
    return report
