"""The runner's own view of its compute device. `runner work`, `run`, `check` and `bench` ask it
before they start; `evaluate` asks it again after a job on a CUDA device failed, before the
failure is put on the submission.

Whose fault a device failure is (docs/errors.md has the table of every kind):

- The runner never takes the submission's word for it: a submitted model can raise any message,
  "CUDA driver error" included. Instead it checks the device itself with a probe, a few lines of
  its own code run in the same sandbox and with the same GPU device nodes as a job's child, after
  the job's child has ended.
- The probe finds the device unusable (CUDA not available in the sandbox, a driver error, an
  index past the devices present, a device that vanished, a probe that hangs or crashes): the
  failure is DEVICE_ERROR, the platform's.
- The probe finds less than ``RUNNER_DEVICE_MIN_FREE_FRACTION`` (default 0.5) of the device's
  memory free, not counting what this runner process holds itself: other processes hold the
  device, so a job that failed on it (out of memory above all) failed for want of the memory it
  was promised. DEVICE_ERROR.
- Otherwise the device is healthy and mostly free, and the job's own kind stands: an
  out-of-memory is the submission's (OUT_OF_MEMORY) since it still did not fit after the runner
  shrank its batches down to one item.
"""
from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from runner.spec import ErrorKind, EvaluationError
from runner.workdir import locked_folder

GiB = 1 << 30
PROBE_TIME_LIMIT_S = 120
DEFAULT_MIN_FREE_FRACTION = 0.5
_DEVICE = re.compile(r"^(?:cpu|cuda(?::\d+)?)$")
_MARK = "DEVICE-PROBE "
# Kinds a broken or crowded device can cause, so a job that failed with one of them on a CUDA
# device gets its device checked. The others (wrong shapes, NaN, bad files, sandbox escapes) are
# the submission's whatever the device's state.
DEVICE_SUSPECT_KINDS = frozenset({ErrorKind.RUNTIME_ERROR, ErrorKind.OUT_OF_MEMORY, ErrorKind.TIMEOUT})

# Runs as `python -I -c PROBE DEVICE` inside the sandbox; prints one line: _MARK + JSON.
_PROBE = r"""
import json, sys, warnings
device = sys.argv[1]
out = {"count": 0, "problem": "", "name": "", "free": None, "total": None}
try:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import torch
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if torch.version.cuda is None:
            out["problem"] = f"torch {torch.__version__} was built without CUDA"
        elif not torch.cuda.is_available():
            said = "; ".join(str(w.message).strip() for w in caught)[:500]
            out["problem"] = f"CUDA is not available (torch {torch.__version__} sees no CUDA device" + (
                f": {said})" if said else ")")
        else:
            out["count"] = torch.cuda.device_count()
            if index >= out["count"]:
                out["problem"] = (f"{device} does not exist: {out['count']} CUDA device(s) visible "
                                  f"(cuda:0 to cuda:{out['count'] - 1})")
            else:
                on = torch.device("cuda", index)
                torch.ones(1, device=on).add_(1).item()
                torch.cuda.synchronize(on)
                out["free"], out["total"] = (int(v) for v in torch.cuda.mem_get_info(on))
                out["name"] = torch.cuda.get_device_name(on)
except BaseException as exc:
    out["problem"] = f"{type(exc).__name__}: {exc}"[:1000]
sys.stdout.write("\n" + "DEVICE-PROBE " + json.dumps(out) + "\n")
"""


@dataclass(frozen=True)
class DeviceReport:
    """What the probe found. ``free_bytes``/``total_bytes``: the device's memory as the driver
    counts it for every process (None on the CPU or when the device is unusable)."""

    device: str
    usable: bool
    problem: str = ""
    name: str = ""
    count: int = 0
    free_bytes: int | None = None
    total_bytes: int | None = None

    def describe(self) -> str:
        if not self.usable:
            return f"{self.device}: NOT USABLE: {self.problem}"
        if self.total_bytes:
            return (f"{self.device} ({self.name}): {(self.free_bytes or 0) / GiB:.1f} of "
                    f"{self.total_bytes / GiB:.1f} GiB free")
        return f"{self.device} ({self.name or 'cpu'})"


def parse_device(text: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` (any case, spaces ignored), normalised. Raises ValueError
    with what to write instead."""
    value = (text or "").strip().lower()
    if not _DEVICE.match(value):
        raise ValueError(f"unknown device {text!r}: use cpu, cuda (the first GPU) or cuda:N")
    return value


def resolve_device(device: str | None, pools: list[str]) -> tuple[str, bool]:
    """The device a runner uses, and whether it was implied by a ``gpu`` pool rather than asked
    for. Without ``device``: cuda when serving a pool named gpu, else cpu. Raises ValueError."""
    if device:
        return parse_device(device), False
    return ("cuda", True) if "gpu" in pools else ("cpu", False)


def probe(device: str) -> DeviceReport:
    """Check ``device`` from a fresh process in the job sandbox (GPU device nodes bound, as for
    a job; a plain process where the sandbox is unavailable). The CPU is always usable and needs
    no process. Takes a few seconds (torch's import and CUDA's start); at most PROBE_TIME_LIMIT_S."""
    from runner.sandbox import run_sandboxed

    device = parse_device(device)
    if device == "cpu":
        return DeviceReport(device, True, name="cpu")
    env = {"OMP_NUM_THREADS": "1"}
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    base = os.environ.get("RUNNER_WORK_DIR") or None
    with locked_folder("runner-device-", base) as tmp:  # unmounts the scratch volume too
        Path(tmp).chmod(0o711)
        try:
            # trust=True: the probe is the runner's own code, never a submission's.
            result = run_sandboxed([sys.executable, "-I", "-c", _PROBE, device], scratch=Path(tmp) / "scratch",
                                   time_limit_s=PROBE_TIME_LIMIT_S, trust=True, gpu=True, env=env)
        except EvaluationError as exc:
            return DeviceReport(device, False, f"the device check could not start: {exc.message}")
    lines = [line for line in result.stdout_tail.splitlines() if line.startswith(_MARK)]
    if not lines:
        what = "hung" if result.timed_out else "crashed"
        tail = (result.stderr_tail.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        return DeviceReport(device, False, f"the device check {what}: {tail[:500]}")
    found = json.loads(lines[-1][len(_MARK):])
    if found.get("problem"):
        return DeviceReport(device, False, _with_hint(str(found["problem"])), count=int(found.get("count") or 0))
    return DeviceReport(device, True, name=str(found.get("name") or ""), count=int(found.get("count") or 0),
                        free_bytes=found.get("free"), total_bytes=found.get("total"))


def _with_hint(problem: str) -> str:
    if "CUDA is not available" in problem and not any(Path("/dev").glob("nvidia[0-9]*")):
        return problem + "; this machine has no /dev/nvidia* device nodes (no NVIDIA driver or GPU)"
    return problem


def startup_problem(device: str, *, implied_by_pool: bool = False, command: str = "runner work") -> str | None:
    """None when ``device`` is usable; else what a person starting ``command`` should read: why
    not, and what to start instead."""
    report = probe(device)
    if report.usable:
        return None
    if implied_by_pool:
        return (f"{command} serves the gpu pool, whose jobs run on --device cuda unless told otherwise, but this "
                f"machine cannot use cuda: {report.problem}. Start it with --device cpu to evaluate the gpu pool's "
                f"jobs on this CPU anyway ({command} --pool gpu --device cpu), or serve --pool cpu. Nothing was "
                "claimed.")
    return (f"--device {device} was asked for, but this machine cannot use it: {report.problem}. "
            + (f"Pick one of cuda:0 to cuda:{report.count - 1}, or start with --device cpu."
               if report.count else "Start with --device cpu.")
            + (" Nothing was claimed." if command == "runner work" else ""))


def min_free_fraction() -> float:
    """RUNNER_DEVICE_MIN_FREE_FRACTION (0–1, default 0.5): below it the device counts as full."""
    try:
        value = float(os.environ.get("RUNNER_DEVICE_MIN_FREE_FRACTION") or DEFAULT_MIN_FREE_FRACTION)
    except ValueError:
        return DEFAULT_MIN_FREE_FRACTION
    return min(max(value, 0.0), 1.0)


def device_fault(report: DeviceReport, *, own_bytes: int = 0, min_free: float | None = None) -> str | None:
    """Why ``report``'s device, checked after a job failed, is to blame; None when it is not.
    ``own_bytes``: device memory this runner process itself holds (counted as free)."""
    if not report.usable:
        return report.problem
    if not report.total_bytes or report.free_bytes is None:
        return None
    fraction = min_free if min_free is not None else min_free_fraction()
    free = min(report.total_bytes, report.free_bytes + max(0, own_bytes))
    if free < fraction * report.total_bytes:
        held = report.total_bytes - free
        return (f"other processes hold {held / GiB:.1f} GiB of {report.device}'s {report.total_bytes / GiB:.1f} GiB "
                f"({report.name}), leaving {free / GiB:.1f} GiB, under the {fraction:.0%} this runner needs free")
    return None


def _release_own_memory(device: str) -> int:
    """Close this process's idle model servers and hand torch's cached blocks back; returns the
    device memory this process still holds (bytes)."""
    from runner.serve import POOL

    POOL.close_idle()
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return 0
    try:
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        torch.cuda.empty_cache()
        return int(torch.cuda.memory_reserved(index))
    except Exception:  # noqa: BLE001 - a broken device: the probe will say so
        return 0


def blame(exc: EvaluationError, device: str) -> EvaluationError:
    """The error to report for a job on ``device`` that failed with ``exc``: a DEVICE_ERROR when
    ``exc`` is a kind a device can cause and the probe, run now that the job's child has ended,
    finds the device unusable or held by other processes; ``exc`` itself otherwise."""
    if exc.kind not in DEVICE_SUSPECT_KINDS or not device.startswith("cuda"):
        return exc
    own = _release_own_memory(device)
    fault = device_fault(probe(device), own_bytes=own)
    if fault is None:
        return exc
    return EvaluationError(
        ErrorKind.DEVICE_ERROR,
        f"the runner's device failed, not the submission: {fault}. The job goes to another runner and does not "
        f"count against your quota. (The job had stopped with {exc.kind}: {exc.message[:600]})",
        exc.log_tail,
    )
