"""Optimizer track, synthetic functions (opt-f1, opt-f2, opt-f3): a submitted optimizer moves one
float32 parameter from x0 for a fixed number of steps on the diffGrad paper's F1, F2 or F3.

1. Write the child program and the submission into a read-only input folder.
2. Run the child in the sandbox; it writes the trajectory x0, x1, ..., x_steps to scratch.
3. Re-derive everything here, in the trusted parent: F at every x (float32), final_x, final_loss =
   F(final_x), min_loss = the minimum of F over the trajectory including x0. The child's own loss
   values are never read.
"""
from __future__ import annotations

import json
import math
import platform
import shutil
import struct
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import runner
from runner import child as child_program
from runner.sandbox import SandboxResult, read_scratch_file, run_sandboxed
from runner.spec import ErrorKind, EvaluationError, JobSpec, make_result
from runner.untrusted import MAX_DOC_BYTES, Schema, printable, read_report

Progress = Callable[[float, str], None]
SEED = 0
MEMORY_BYTES = 8 << 30
CHILD_PATH = Path(child_program.__file__)


def task_settings(spec: JobSpec) -> tuple[str, float, int]:
    params = spec.task.params
    function = str(params.get("function") or spec.task.slug.removeprefix("opt-"))
    if function not in child_program.SYNTHETIC_FUNCTIONS:
        raise EvaluationError(ErrorKind.RUNNER_ERROR, f"task {spec.task.slug} names unknown function {function!r}")
    return function, float(params.get("x0", -1.0)), int(params.get("steps", 300))


def stage_inputs(work_dir: Path, artifact_path: Path) -> tuple[Path, Path, Path]:
    """A world-readable input folder holding the child program and the submission: the sandbox
    uid reads them through a read-only bind."""
    work_dir.chmod(0o711)  # traversable, not listable: needed when the sandbox runs without staging
    inputs = work_dir / "input"
    inputs.mkdir(mode=0o755)
    inputs.chmod(0o755)
    child = inputs / "child.py"
    source = inputs / "submission.py"
    shutil.copyfile(CHILD_PATH, child)
    shutil.copyfile(artifact_path, source)
    for path in (child, source):
        path.chmod(0o644)
    return inputs, child, source


def progress_reader(progress: Progress, start: float, span: float) -> Callable[[str], None]:
    """Turn the child's ``@progress <fraction> <message>`` lines into calls of ``progress``."""

    def on_line(line: str) -> None:
        if not line.startswith("@progress "):
            return
        _, fraction, *message = line.split(" ", 2)
        value = float(fraction)
        if math.isfinite(value):
            text = printable(message[0], keep_newlines=False)[:200] if message else ""
            progress(start + span * min(1.0, max(0.0, value)), text)

    return on_line


class SyntheticReport(Schema):
    """What optimize-synthetic writes on success (runner/child.py)."""

    x: list[float]
    optimize_s: float = 0.0


def read_child_doc(scratch: Path, result: SandboxResult, schema: type[Schema]) -> dict[str, Any]:
    """The child's document checked against ``schema`` (as a dict), or the EvaluationError its
    absence or content amounts to: the error it reports (user kinds only), WRONG_OUTPUT when it is
    not what the harness writes, SANDBOX_VIOLATION when it is not a regular file."""
    if result.timed_out or result.cancelled or result.violation:
        raise result.failure() or EvaluationError(ErrorKind.RUNNER_ERROR, "the run stopped without a reason")
    raw = read_scratch_file(scratch, "out.json", max_bytes=MAX_DOC_BYTES)
    if raw is None:
        error = result.failure()
        if error is not None:
            raise error
        raise EvaluationError(ErrorKind.RUNTIME_ERROR, "the evaluation ended without a result: did the submission "
                              "exit the process (os._exit) or delete its output?", result.log_tail)
    report = read_report(raw, schema, what="the evaluation's output", log_tail=result.log_tail)
    return report.model_dump()


def trajectory_from(doc: dict[str, Any], x0: float, steps: int, log_tail: str) -> list[float]:
    xs = doc.get("x")
    if not isinstance(xs, list) or len(xs) != steps + 1:
        count = len(xs) if isinstance(xs, list) else 0
        raise EvaluationError(ErrorKind.WRONG_OUTPUT, f"the trajectory has {count} points, expected {steps + 1}",
                              log_tail)
    out = []
    for step, x in enumerate(xs):
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise EvaluationError(ErrorKind.WRONG_OUTPUT, f"x at step {step} is not a number", log_tail)
        value = _float32(x)  # the parameter is float32: so is every point scored
        if value is None:
            raise EvaluationError(ErrorKind.NOT_FINITE, f"x is {x} at step {step}", log_tail)
        out.append(value)
    if out[0] != _float32(x0):
        raise EvaluationError(ErrorKind.WRONG_OUTPUT, f"the trajectory starts at {out[0]}, not at x0 = {x0}", log_tail)
    return out


def _float32(value: float) -> float | None:
    """``value`` rounded to float32, or None when it is not a finite float32."""
    try:
        rounded = struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        return None
    return rounded if math.isfinite(rounded) else None


def evaluate_synthetic(spec: JobSpec, artifact_path: Path, *, work_dir: Path, data_root: Path, trust: bool,
                       device: str, progress: Progress, cancel: threading.Event | None = None) -> dict[str, Any]:
    function, x0, steps = task_settings(spec)
    progress(0.02, "starting the sandbox")
    inputs, child, source = stage_inputs(work_dir, artifact_path)
    scratch = work_dir / "scratch"
    argv = [sys.executable, "-I", str(child), "optimize-synthetic", "--source", str(source),
            "--hparams", json.dumps(spec.submission.hparams), "--function", function, "--x0", repr(x0),
            "--steps", str(steps), "--seed", str(SEED), "--out", str(scratch / "out.json")]
    result = run_sandboxed(argv, scratch=scratch, ro_binds=[inputs], time_limit_s=spec.task.time_limit_s,
                           memory_bytes=MEMORY_BYTES, trust=trust, cancel=cancel,
                           on_stdout_line=progress_reader(progress, 0.05, 0.9))
    doc = read_child_doc(scratch, result, SyntheticReport)
    xs = trajectory_from(doc, x0, steps, result.log_tail)
    progress(0.97, "scoring the trajectory")

    losses = [child_program.synthetic_loss(function, x) for x in xs]
    if not all(math.isfinite(v) for v in losses):
        step = next(i for i, v in enumerate(losses) if not math.isfinite(v))
        raise EvaluationError(ErrorKind.NOT_FINITE, f"F({xs[step]}) is not finite at step {step}", result.log_tail)
    import torch

    metrics = {"final_x": xs[-1], "final_loss": losses[-1], "min_loss": min(losses)}
    return make_result(
        spec.task.slug, metrics,
        curves={"trajectory": {"step": list(range(steps + 1)), "x": xs, "loss": losses}},
        env={"runner": runner.__version__, "torch": torch.__version__, "python": platform.python_version(),
             "device": "cpu", "sandbox": result.mode, "seeds": [SEED], "function": function, "x0": x0,
             "steps": steps, "dtype": "float32", "gradients": "autograd",
             "min_loss_over": "x0 and every step"},
        timing={"wall_s": round(result.wall_s, 4), "items_per_s": round(steps / max(result.wall_s, 1e-9), 2)},
    )
