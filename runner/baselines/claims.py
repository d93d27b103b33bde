"""What the seed papers claim, measured on this platform's own workloads (issue 16, item 4;
``runner baselines claims``; the table in docs/benchmarks.md).

Each :class:`Claim` pairs a method with the comparator its paper measures it against, on one
optimizer training task, and names the figure that decides it. :func:`measure` runs every
(task, baseline, hyperparameters) it needs through ``runner run`` (the same path as a site job,
the optimizer in the sandbox; one result file each, kept between calls so an interrupted
measurement resumes) and :func:`verdicts` reads the per-seed curves back:

- ``final``: the last evaluation's value (test top-1 in %, validation bits per byte) per seed;
  the method's mean minus the comparator's with Welch's 95% interval (unequal variances, the
  Welch–Satterthwaite degrees of freedom).
- ``best``: the same with each seed's best evaluation.
- ``speedup``: the comparator's budget in samples over the samples the method needs to reach
  the comparator's mean final value (the first evaluation at or past it), per seed; the median
  over seeds, None when a seed never reaches it.

A verdict is ``holds`` only when the interval (or every seed's speed-up) lies on the claimed side,
``contradicted`` when it lies on the other, otherwise ``not resolved at this scale``. Scale
matters: these are 2-core CPU budgets (a small CNN on 1,347 digits, a 0.9M-parameter byte
transformer), not the papers' ResNets on CIFAR and ImageNet.
"""
from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scipy import stats

OPTIMIZERS = Path(__file__).resolve().parent / "optimizers"


@dataclass(frozen=True)
class Run:
    """One baseline file with its hyperparameters on one task; ``name`` names its result file."""

    name: str
    file: str
    hparams: dict[str, Any] = field(default_factory=dict)

    def result_path(self, folder: Path, task: str) -> Path:
        return folder / f"{task}--{self.name}.json"


@dataclass(frozen=True)
class Claim:
    """A paper's claim: ``method`` beats (or, with ``margin``, is within ``margin`` of)
    ``comparator`` on ``task`` by the figure ``figure`` (``final``, ``best`` or ``speedup``)."""

    paper: str
    statement: str
    task: str
    method: Run
    comparator: Run
    figure: str
    margin: float = 0.0  # final/best: how much worse the method may be and still hold (curve units)
    min_speedup: float = 1.0  # speedup: what the claim promises at least


SGD = Run("sgdm", "sgdm.py", {"lr": 0.001, "momentum": 0.9})
ADAM = Run("adam", "adam.py", {"lr": 0.001})
CLAIMS: tuple[Claim, ...] = (
    Claim("TrAct (Petersen et al. 2024)", "TrAct reaches the plain run's accuracy in 1.25-4x fewer epochs (SGD)",
          "opt-digits", Run("tract-sgd", "tract_sgd.py", {"lr": 0.001, "momentum": 0.9, "lam": 0.1}), SGD,
          "speedup", min_speedup=1.25),
    Claim("TrAct (Petersen et al. 2024)", "TrAct reaches the plain run's accuracy in 1.25-4x fewer epochs (Adam)",
          "opt-digits", Run("tract-adam", "tract_adam.py", {"lr": 0.001, "lam": 0.1}), ADAM, "speedup",
          min_speedup=1.25),
    Claim("Data diet (Paul et al. 2021)", "EL2N scores from early in training prune 50% of the data at little "
          "or no cost in accuracy (within 1 point)", "opt-digits",
          Run("el2n-diet", "el2n_diet.py", {"lr": 0.001, "momentum": 0.9, "score_after": 42, "keep": 0.5}), SGD,
          "final", margin=1.0),
    Claim("Data diet (Paul et al. 2021)", "GraNd at initialization prunes 50% of the data at little cost "
          "(within 1 point)", "opt-digits",
          Run("grand-diet", "grand_diet.py", {"lr": 0.001, "momentum": 0.9, "score_after": 0, "keep": 0.5}), SGD,
          "final", margin=1.0),
    Claim("AdAdaGrad (Lau et al. 2024)", "AdaGradNorm with the norm test's growing batch keeps the accuracy of "
          "the fixed batch (within 1 point) in fewer steps", "opt-digits",
          Run("adadagradnorm", "adadagradnorm.py", {"lr": 0.5, "eta": 0.1, "b_max": 1024}),
          Run("adagradnorm-fixed", "adadagradnorm.py", {"lr": 0.5, "eta": 0.1, "b_max": 64}), "final", margin=1.0),
    Claim("Coordinate-wise clipping (Pan and Li 2023)", "clipping the top 10% of coordinates makes SGD train the "
          "transformer better (lower best validation bits per byte)", "opt-text-transformer",
          Run("clip-sgd", "clip_sgd.py", {"lr": 10, "momentum": 0.9, "c": 0.1}),
          Run("sgd", "sgdm.py", {"lr": 0.5, "momentum": 0.9}), "best"),
    Claim("Coordinate-wise clipping (Pan and Li 2023)", "Adam still beats clipped SGD on the transformer (lower best "
          "validation bits per byte)", "opt-text-transformer", Run("adam", "adam.py", {"lr": 0.01}),
          Run("clip-sgd", "clip_sgd.py", {"lr": 10, "momentum": 0.9, "c": 0.1}), "best"),
)
HIGHER_IS_BETTER = {"test_top1": True, "val_bpb": False}


def runner_command() -> list[str]:
    return [sys.executable, "-m", "runner.cli"]


def measure(folder: Path, claims: Sequence[Claim] = CLAIMS, *, data_root: Path | None = None,
            say: Callable[[str], None] = print) -> list[Path]:
    """Run what ``claims`` need that ``folder`` does not hold yet, each through ``runner run``;
    returns the result files. Raises RuntimeError naming the run and its output's tail when one fails."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    wanted = {(c.task, r.name): (c.task, r) for c in claims for r in (c.method, c.comparator)}
    for task, run in wanted.values():
        path = run.result_path(folder, task)
        paths.append(path)
        if path.is_file():
            continue
        say(f"runner run --task {task} --artifact {run.file} --hparams '{json.dumps(run.hparams)}'")
        command = [*runner_command(), "run", "--task", task, "--artifact", str(OPTIMIZERS / run.file),
                   "--hparams", json.dumps(run.hparams), "--out", str(path)]
        if data_root is not None:
            command += ["--data-root", str(data_root)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0 or not path.is_file():
            raise RuntimeError(f"{task} {run.name} failed (exit {done.returncode}): {(done.stdout + done.stderr)[-2000:]}")
    return paths


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    seeds: int
    method: float  # mean over seeds of the figure's per-seed value (final/best) or the median speed-up
    comparator: float
    difference: float | None  # method − comparator (final/best)
    interval: tuple[float, float] | None  # Welch 95% interval of the difference, or the seeds' speed-up range
    unit: str
    outcome: str


def seed_values(doc: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """(the validation curve's key, the per-seed curves) of a training result."""
    curves = [doc["curves"][k] for k in sorted(doc["curves"]) if k.startswith("seed_")]
    key = "val_bpb" if "val_bpb" in curves[0] else "test_top1"
    return key, curves


def welch_interval(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """95% interval of mean(a) − mean(b), Welch's t (two-sided; Welch–Satterthwaite df).
    Raises ValueError with fewer than two values on a side."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Welch's interval needs at least two seeds on each side")
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff = statistics.fmean(a) - statistics.fmean(b)
    if va + vb == 0:
        return diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(stats.t.ppf(0.975, df)) * math.sqrt(va + vb)
    return diff - half, diff + half


def samples_to(curve: dict[str, Any], key: str, target: float, higher: bool) -> float | None:
    for value, samples in zip(curve[key], curve["samples"], strict=True):
        if (value >= target) if higher else (value <= target):
            return float(samples)
    return None


def judge(claim: Claim, method_doc: dict[str, Any], comparator_doc: dict[str, Any]) -> Verdict:
    """The verdict of ``claim`` from the two result documents (see the module docstring)."""
    key, mine = seed_values(method_doc)
    _, theirs = seed_values(comparator_doc)
    higher = HIGHER_IS_BETTER[key]
    unit = "% top-1" if key == "test_top1" else "bits per byte"
    if claim.figure == "speedup":
        target = statistics.fmean(c[key][-1] for c in theirs)
        budget = statistics.fmean(c["samples"][-1] for c in theirs)
        reached = [samples_to(c, key, target, higher) for c in mine]
        ups = [budget / s if s else 0.0 for s in reached]  # 0: never reached
        median = statistics.median(ups)
        outcome = ("holds" if min(ups) >= claim.min_speedup else
                   "contradicted" if max(ups) < 1.0 else "not resolved at this scale")
        return Verdict(claim, len(mine), median, 1.0, None, (min(ups), max(ups)), "x fewer samples", outcome)
    pick = (max if higher else min) if claim.figure == "best" else (lambda values: values[-1])
    a = [float(pick(c[key])) for c in mine]
    b = [float(pick(c[key])) for c in theirs]
    low, high = welch_interval(a, b)
    sign = 1.0 if higher else -1.0  # in "better" units: positive = the method is better
    better_low, better_high = sorted((sign * low, sign * high))
    if better_low > -claim.margin:
        outcome = "holds"
    elif better_high < -claim.margin:
        outcome = "contradicted"
    else:
        outcome = "not resolved at this scale"
    return Verdict(claim, min(len(a), len(b)), statistics.fmean(a), statistics.fmean(b),
                   statistics.fmean(a) - statistics.fmean(b), (low, high), unit, outcome)


def verdicts(folder: Path, claims: Sequence[Claim] = CLAIMS) -> list[Verdict]:
    """Every claim's verdict from the result files in ``folder`` (see :func:`measure`). Raises
    FileNotFoundError naming a missing result."""
    out = []
    for claim in claims:
        docs = [json.loads(run.result_path(folder, claim.task).read_text()) for run in (claim.method, claim.comparator)]
        out.append(judge(claim, *docs))
    return out


def markdown(found: Sequence[Verdict]) -> str:
    """The claims table of docs/benchmarks.md."""
    lines = ["| paper | claim | task, seeds | method | comparator | measured | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for v in found:
        c = v.claim
        if c.figure == "speedup":
            lo, hi = v.interval or (0.0, 0.0)
            measured = f"median {v.method:.2f}x (seeds {lo:.2f}-{hi:.2f}; 0 = never reached)"
        else:
            lo, hi = v.interval or (0.0, 0.0)
            measured = (f"{c.figure} {v.method:.3f} vs {v.comparator:.3f} {v.unit}: Δ {v.difference:+.3f} "
                        f"[{lo:+.3f}, {hi:+.3f}]")
        lines.append(f"| {c.paper} | {c.statement} | {c.task}, {v.seeds} | {c.method.file} "
                     f"{json.dumps(c.method.hparams)} | {c.comparator.file} {json.dumps(c.comparator.hparams)} | "
                     f"{measured} | {v.outcome} |")
    return "\n".join(lines)
