"""What the tracks share, so that no track borrows from another.

- :func:`model_file_format` ``(path) -> str``: a model file's format by its content.
- :func:`builtin_or_model_file` ``(path, kind, *, declared=None) -> (format, builtin name or None)``:
  the runner's one "builtin baseline or model file" decision (the tracks, ``runner run``'s local
  job spec in runner/evaluate.py, ``runner bench``).
- :func:`model_options` ``(spec, kind) -> {"precision", "channels_last"}``: the evaluation settings
  every model submission may carry in its hyperparameters.
- :func:`server_env` and :func:`load_seconds`: what a result says about the sandboxed model server
  that ran the model (classifier and denoising tracks).

Staging the sandbox's input folder (the model server, the optimizer server, the training track) is
:func:`runner.workdir.stage_input_folder` ``(parent: Path, files: Mapping[str, Path | bytes |
Callable[[Path], object]], *, name: str = "input") -> Path``: it lives beside the runner's other
private-folder code, because the model server (runner/serve/), which is below the tracks, stages
too.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any, BinaryIO

import runner
from runner.architectures import check_architecture_hparams
from runner.sandboxed import model_server
from runner.spec import (
    BUILTIN_BASELINES,
    BUILTIN_FORMAT,
    MODEL_HPARAM_KEYS,
    OPTIMIZER_FORMAT,
    ErrorKind,
    EvaluationError,
    JobSpec,
    SpecError,
    read_builtin_baseline,
    sniff_model_format,
)


# --------------------------------------------------------------------------------------------
# What the artifact is.
# --------------------------------------------------------------------------------------------
def model_file_format(path: Path) -> str:
    """The format of the model file at ``path`` by its content: ``"torchscript"``, ``"pt2"``,
    ``"onnx"`` or ``"safetensors"`` (runner.spec.sniff_model_format). Raises EvaluationError
    INVALID_ARTIFACT, with the export advice, for anything else (pickles included); OSError when the
    file cannot be read."""
    with open(path, "rb") as fh:
        return _sniff(fh)


def _sniff(fh: BinaryIO) -> str:
    head = fh.read(4096)
    fh.seek(0)
    try:
        return sniff_model_format(head, fh)
    except SpecError as exc:
        raise EvaluationError(ErrorKind.INVALID_ARTIFACT, str(exc)) from exc


def _starts_like_json(fh: BinaryIO) -> bool:
    """Whether the file's first byte that is not white space is ``{`` (a builtin baseline file)."""
    while block := fh.read(4096):
        text = block.lstrip()
        if text:
            return text[:1] == b"{"
    return False


def builtin_or_model_file(path: Path, kind: str, *, declared: str | None = None) -> tuple[str, str | None]:
    """``(format, builtin baseline name or None)`` of the artifact at ``path`` for a submission
    ``kind`` (``"classifier"``, ``"denoiser"``, ``"optimizer"``).

    ``declared`` is the format the site recorded (``JobSpec.submission.artifact_format``): a builtin
    baseline when it says :data:`~runner.spec.BUILTIN_FORMAT` and the file agrees. Without it (a
    local run), the content decides: an optimizer is Python source
    (:data:`~runner.spec.OPTIMIZER_FORMAT`), a file that opens with ``{`` is a builtin baseline
    where ``kind`` has them (:data:`~runner.spec.BUILTIN_BASELINES`), anything else a model file
    (:func:`model_file_format`). Raises EvaluationError INVALID_ARTIFACT, with advice, for a
    builtin file that does not parse or names no baseline of ``kind``, and for an unknown model
    file; OSError when the file cannot be read.
    """
    if declared is None and kind == "optimizer":
        return OPTIMIZER_FORMAT, None
    with open(path, "rb") as fh:
        if declared is None:
            builtin = kind in BUILTIN_BASELINES and _starts_like_json(fh)
            fh.seek(0)
        else:
            builtin = declared == BUILTIN_FORMAT
        if not builtin:
            return _sniff(fh), None
        try:
            return BUILTIN_FORMAT, read_builtin_baseline(fh.read(), kind)
        except SpecError as exc:
            raise EvaluationError(ErrorKind.INVALID_ARTIFACT, str(exc)) from exc


# --------------------------------------------------------------------------------------------
# Settings every model submission may carry.
# --------------------------------------------------------------------------------------------
def model_options(spec: JobSpec, kind: str) -> dict[str, Any]:
    """``{"precision": "fp32" | "bf16", "channels_last": "auto" | "on" | "off", "architecture":
    JSON or ""}`` from the submission's hyperparameters, defaults filled in; ``architecture`` is a
    .safetensors submission's library architecture (runner.architectures.ArchitectureSpec.to_json,
    the model server's ``ServerSettings.architecture``). Raises EvaluationError BAD_HPARAMS for
    hyperparameters that are not a JSON object, keys a ``kind`` does not take
    (runner.spec.MODEL_HPARAM_KEYS), values that do not fit, and an architecture that
    runner.architectures.check_architecture_hparams refuses (a denoiser's .safetensors file
    among them)."""
    hparams = spec.submission.hparams or {}
    if not isinstance(hparams, dict):
        raise EvaluationError(ErrorKind.BAD_HPARAMS, "the hyperparameters must be a JSON object")
    try:
        architecture = check_architecture_hparams(hparams, kind, spec.submission.artifact_format)
    except SpecError as exc:
        raise EvaluationError(ErrorKind.BAD_HPARAMS, str(exc)) from exc
    accepted = MODEL_HPARAM_KEYS[kind]
    unknown = sorted(set(hparams) - set(accepted))
    if unknown:
        raise EvaluationError(
            ErrorKind.BAD_HPARAMS,
            f"unknown hyperparameters for a {kind}: {', '.join(unknown)}; "
            f"accepted: {', '.join(accepted)} (see the task page)",
        )
    precision = str(hparams.get("precision", "fp32")).lower()
    if precision not in ("fp32", "bf16"):
        raise EvaluationError(
            ErrorKind.BAD_HPARAMS,
            f'precision {hparams.get("precision")!r}: use "fp32" (the default) or "bf16"',
        )
    channels_last = hparams.get("channels_last", "auto")
    channels_last = {True: "on", False: "off"}.get(channels_last, channels_last)
    if channels_last not in model_server.CHANNELS_LAST:
        raise EvaluationError(ErrorKind.BAD_HPARAMS, 'channels_last must be true, false or "auto"')
    return {"precision": precision, "channels_last": channels_last,
            "architecture": architecture.to_json() if architecture else ""}


# --------------------------------------------------------------------------------------------
# What a result says about the model server.
# --------------------------------------------------------------------------------------------
def server_env(info: dict[str, Any], fmt: str, device: str, reused: bool) -> dict[str, Any]:
    """The part of a result's ``env`` about the model server that ran the model: versions, the
    device it ran on and the one asked for, sandbox, format, precision, memory format, threads,
    and ``model_server`` (``reused``: a warm server; ``load_s``: seconds it took to load)."""
    return {
        "runner": runner.__version__,
        "python": platform.python_version(),
        "torch": info.get("torch"),
        "onnxruntime": info.get("onnxruntime") if fmt == "onnx" else None,
        "cuda": info.get("cuda"),
        "device": info.get("device_name") or info.get("device") or device,
        "device_requested": device,
        "sandbox": info.get("sandbox"),
        "format": fmt,
        "precision": info.get("precision"),
        "memory_format": info.get("memory_format"),
        "threads": info.get("threads"),
        "seeds": [],
        "model_server": {"reused": reused, "load_s": info.get("load_s"), "protocol": info.get("protocol")},
    }


def load_seconds(info: dict[str, Any], reused: bool) -> float:
    """Seconds spent loading the model for this job: 0.0 on a warm server (it was loaded for an
    earlier job), else the server's ``load_s`` rounded to 0.1 ms."""
    return 0.0 if reused else round(float(info.get("load_s") or 0.0), 4)
