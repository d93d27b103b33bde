"""The sandboxed training program (runner/sandboxed/training.py), launched by the parent: the CUDA
path, where the whole loop still runs in the sandbox beside the submission until the runner's
loop (loop.py) covers CUDA.

:func:`stage_inputs` lays out the read-only input folder (the program, the submission, the
settings and the training split; nothing of the test split), :func:`run_program` runs it and reads
the one document it writes (:class:`TrainingReport` or :class:`BenchReport`), turning its
``@progress`` lines into progress calls. :func:`hidden_package_data` serves every sandbox of the
track, the runner's loop's optimizer server included.
"""
from __future__ import annotations

import importlib.util
import json
import math
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from runner import sandboxed
from runner.datasets.images import cuda_requested
from runner.progress import Progress
from runner.sandbox import SandboxResult, read_scratch_file, run_sandboxed
from runner.sandboxed import training as training_program
from runner.spec import ErrorKind, EvaluationError
from runner.tracks.training.tasks import Splits
from runner.untrusted import MAX_DOC_BYTES, Schema, printable, read_report
from runner.workdir import stage_input_folder

PROGRAM = "training.py"


def stage_inputs(work_dir: Path, source: Path, config: dict[str, Any], splits: Splits) -> Path:
    """``work_dir/input``, a world-readable folder the sandbox reads through a read-only bind: the
    training program and the modules beside it, the submission (``submission.py``), the settings
    (``task.json``: ``config``) and the training split (uint8 NHWC images, int64 labels, as .npy).
    Nothing of the test split. Raises FileExistsError when the folder exists, OSError when a
    write fails."""
    inputs = stage_input_folder(work_dir, {
        "submission.py": Path(source),
        training_program.TASK_FILE: json.dumps(config).encode(),
        training_program.TRAIN_IMAGES: lambda p: np.save(p, np.ascontiguousarray(splits.train_images, dtype=np.uint8)),
        training_program.TRAIN_LABELS: lambda p: np.save(p, np.ascontiguousarray(splits.train_labels, dtype=np.int64)),
    })
    sandboxed.stage(PROGRAM, inputs)
    return inputs


def hidden_package_data(work_dir: Path) -> list[Any]:
    """Read-only binds that lay an empty folder over dataset files shipped inside packages the
    sandbox can read through the interpreter's binds: scikit-learn's bundled digits, test split
    included, would otherwise be one ``load_digits()`` away from the submission."""
    spec = importlib.util.find_spec("sklearn")
    folders = [Path(p) / "datasets" / "data" for p in (spec.submodule_search_locations or [])] if spec else []
    folders = [f for f in folders if f.is_dir()]
    if not folders:
        return []
    empty = work_dir / "hidden"
    empty.mkdir(mode=0o755, exist_ok=True)
    empty.chmod(0o755)
    return [(empty, folder) for folder in folders]


class SeedReport(Schema):
    seed: int
    train_loss: list[float]
    seconds: list[float]


class TrainingReport(Schema):
    """What the training program's ``train`` writes on success: per seed, the curves."""

    runs: list[SeedReport]


class BenchReport(Schema):
    """What the training program's ``bench`` writes on success."""

    train_items_per_s: float
    pure_step_items_per_s: float
    ratio: float
    harness_steps: int
    harness_s: float
    pure_steps: int
    pure_s: float
    warmup_steps: int
    windows: int
    batch_size: int
    steps_per_epoch: int
    precision: str
    threads: int
    torch: str
    device_name: str


def progress_reader(progress: Progress, start: float, span: float) -> Callable[[str], None]:
    """Turn the program's ``@progress <fraction> <message>`` lines into calls of ``progress``
    (fraction mapped into ``start`` .. ``start + span``, message made printable, 200 characters)."""

    def on_line(line: str) -> None:
        if not line.startswith("@progress "):
            return
        _, fraction, *message = line.split(" ", 2)
        value = float(fraction)
        if math.isfinite(value):
            text = printable(message[0], keep_newlines=False)[:200] if message else ""
            progress(start + span * min(1.0, max(0.0, value)), text)

    return on_line


def read_program_doc(scratch: Path, result: SandboxResult, schema: type[Schema]) -> dict[str, Any]:
    """The program's document (``scratch/out.json``) checked against ``schema`` (as a dict), or
    the EvaluationError its absence or content amounts to: the error it reports (user kinds only),
    WRONG_OUTPUT when it is not what the harness writes, SANDBOX_VIOLATION when it is not a
    regular file; TIMEOUT, LEASE_EXPIRED or the violation when the run was stopped."""
    if result.timed_out or result.cancelled or result.violation:
        raise result.failure() or EvaluationError(ErrorKind.RUNNER_ERROR, "the run stopped without a reason")
    raw = read_scratch_file(scratch, training_program.OUT_FILE, max_bytes=MAX_DOC_BYTES)
    if raw is None:
        error = result.failure()
        if error is not None:
            raise error
        raise EvaluationError(ErrorKind.RUNTIME_ERROR, "the evaluation ended without a result: did the submission "
                              "exit the process (os._exit) or delete its output?", result.log_tail)
    report = read_report(raw, schema, what="the evaluation's output", log_tail=result.log_tail)
    return report.model_dump()


def run_program(command: str, work_dir: Path, inputs: Path, *, hparams: dict[str, Any], device: str, trust: bool,
                time_limit_s: float, memory_bytes: int, scratch_bytes: int, progress: Progress,
                span: tuple[float, float], cancel: threading.Event | None,
                extra: list[str] | None = None) -> tuple[dict[str, Any], SandboxResult]:
    """Run the staged program's ``command`` (``"train"`` or ``"bench"``) in the sandbox on
    ``device`` (CUDA when requested, else the CPU), writing to ``work_dir/scratch`` (at most
    ``scratch_bytes``) within ``time_limit_s`` seconds and ``memory_bytes`` of address space;
    progress maps into ``span``. Returns (the document as a dict, the sandbox's result). Raises
    EvaluationError as :func:`read_program_doc` does."""
    scratch = work_dir / "scratch"
    gpu = cuda_requested(device)
    argv = [sys.executable, "-I", str(inputs / PROGRAM), command, "--source", str(inputs / "submission.py"),
            "--hparams", json.dumps(hparams), "--data", str(inputs), "--device", device if gpu else "cpu",
            "--out", str(scratch / training_program.OUT_FILE), *(extra or [])]
    result = run_sandboxed(argv, scratch=scratch, ro_binds=[inputs, *hidden_package_data(work_dir)],
                           time_limit_s=time_limit_s, memory_bytes=memory_bytes, trust=trust, gpu=gpu,
                           cancel=cancel, max_scratch_bytes=scratch_bytes,
                           env={"CUBLAS_WORKSPACE_CONFIG": training_program.CUBLAS_WORKSPACE},
                           on_stdout_line=progress_reader(progress, span[0], span[1] - span[0]))
    schema = TrainingReport if command == "train" else BenchReport
    return read_program_doc(scratch, result, schema), result
