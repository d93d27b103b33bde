"""Training statistics: what the optimizer training tasks (runner/tracks/train.py) report over
seeds. Pure numpy.

- :class:`SeedRun`: one seed's curves (per epoch: training loss, training seconds, test top-1 in
  %, training examples consumed) and the sha256 of its final weights.
- :func:`summarize` ``(runs, target) -> (metrics, ci95, breakdown)``: final and best test top-1,
  mean ± sample std over seeds, epochs, samples and seconds to the catalogue's fixed target
  (over the runs that reach it).
- :func:`corruption_summary` ``(prefix, per_seed) -> (metrics, ci95, breakdown)``: the final
  weights' top-1 on a -C set, mean over seeds, per corruption × severity.
- :func:`t_interval`: the Student-t 95% interval of a mean over seeds, clipped to a range.
- :data:`METRIC_NOTES`: what each metric means, for the result's env.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Student's t, two-sided 95% (0.975 quantile), by degrees of freedom; past 30 the normal's 1.96
# is within 4% (the catalogue runs 3 or 5 seeds).
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


@dataclass
class SeedRun:
    """One seed's run: per epoch the mean training loss, the training seconds so far and the
    test top-1 (%) of that epoch's weights; the sha256 (hex) of the final weights' file;
    ``samples``, per epoch, the training examples consumed by its end (batch × steps × epoch on
    the fixed loop, the sample loop's own counter otherwise; empty when unknown)."""

    seed: int
    train_loss: list[float]
    seconds: list[float]
    test_top1: list[float] = field(default_factory=list)
    weights_sha256: str = ""
    samples: list[int] = field(default_factory=list)


def t_interval(values: Sequence[float], low: float | None = None, high: float | None = None) -> list[float] | None:
    """95% Student-t interval ``[lo, hi]`` of the mean over seeds (None for fewer than two),
    clipped to the metric's range ``low`` .. ``high``."""
    n = len(values)
    if n < 2:
        return None
    mean = float(np.mean(values))
    half = (T_975[n - 2] if n - 2 < len(T_975) else 1.96) * float(np.std(values, ddof=1)) / math.sqrt(n)
    lo, hi = mean - half, mean + half
    if low is not None:
        lo = max(lo, low)
    if high is not None:
        hi = min(hi, high)
    return [lo, hi]


def sample_std(values: Sequence[float]) -> float:
    """The sample standard deviation (n − 1); 0.0 for one value."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarize(runs: list[SeedRun], target: float) -> tuple[dict[str, float], dict[str, list[float]], dict[str, Any]]:
    """Metrics, 95% intervals and the per-seed breakdown of finished runs (each with one test
    top-1 per epoch); ``target`` is the test top-1 (%) whose first epoch, seconds and samples
    (when the runs carry ``samples``) count as time to target. The time-to-target metrics are
    absent when no run reaches it."""
    finals = [run.test_top1[-1] for run in runs]
    bests = [max(run.test_top1) for run in runs]
    per_seed: dict[str, Any] = {}
    reached_epochs, reached_seconds, reached_samples = [], [], []
    for run in runs:
        hit = next((i for i, top1 in enumerate(run.test_top1) if top1 >= target), None)
        samples = None if hit is None or not run.samples else int(run.samples[hit])
        if hit is not None:
            reached_epochs.append(hit + 1)
            reached_seconds.append(run.seconds[hit])
        if samples is not None:
            reached_samples.append(samples)
        per_seed[f"seed_{run.seed}"] = {
            "test_top1": run.test_top1[-1], "best_top1": max(run.test_top1),
            "best_epoch": int(np.argmax(run.test_top1)) + 1, "final_train_loss": run.train_loss[-1],
            "reached_target": hit is not None, "epochs_to_target": None if hit is None else hit + 1,
            "seconds_to_target": None if hit is None else run.seconds[hit], "samples_to_target": samples,
            "train_s": run.seconds[-1],
            "weights_sha256": run.weights_sha256,
        }
    metrics: dict[str, float] = {
        "test_top1_mean": float(np.mean(finals)), "test_top1_std": sample_std(finals),
        "best_top1_mean": float(np.mean(bests)), "best_top1_std": sample_std(bests),
        "final_train_loss_mean": float(np.mean([run.train_loss[-1] for run in runs])),
        "runs_reaching_target": len(reached_epochs), "runs": len(runs),
    }
    intervals = {"test_top1_mean": t_interval(finals, 0.0, 100.0), "best_top1_mean": t_interval(bests, 0.0, 100.0)}
    if reached_epochs:
        metrics["epochs_to_target_mean"] = float(np.mean(reached_epochs))
        metrics["seconds_to_target_mean"] = float(np.mean(reached_seconds))
        intervals["epochs_to_target_mean"] = t_interval(reached_epochs, 0.0)
        intervals["seconds_to_target_mean"] = t_interval(reached_seconds, 0.0)
    if reached_samples:
        metrics["samples_to_target_mean"] = float(np.mean(reached_samples))
        intervals["samples_to_target_mean"] = t_interval(reached_samples, 0.0)
    ci95 = {k: v for k, v in intervals.items() if v is not None}
    return metrics, ci95, {"per_seed": per_seed}


def corruption_summary(prefix: str, per_seed: dict[int, dict[str, Any]]) -> tuple[dict[str, float], dict, dict]:
    """(metrics, ci95, breakdown) of the final weights on a -C set, from each seed's corruption
    result (runner.metrics.results ``result_corruptions``: ``metrics.top1`` in %, ``breakdown.per_corruption``
    {corruption: {severity: top-1}}). ``prefix`` names the keys (``cifar10c``): its top-1 and
    corruption error (100 − top-1), means over seeds with their t-interval; per corruption ×
    severity, the mean over seeds; each seed's top-1."""
    per_seed_top1 = {f"seed_{seed}": doc["metrics"]["top1"] for seed, doc in per_seed.items()}
    tables = [doc["breakdown"]["per_corruption"] for doc in per_seed.values()]
    values = list(per_seed_top1.values())
    metrics = {f"{prefix}_top1": float(np.mean(values)), f"{prefix}_corruption_error": float(100 - np.mean(values))}
    ci95 = {}
    interval = t_interval(values, 0.0, 100.0)
    if interval is not None:
        ci95[f"{prefix}_top1"] = interval
        ci95[f"{prefix}_corruption_error"] = [100 - interval[1], 100 - interval[0]]
    per_corruption = {name: {sev: float(np.mean([t[name][sev] for t in tables])) for sev in severities}
                      for name, severities in tables[0].items()}
    breakdown = {"per_corruption": per_corruption, f"{prefix}_per_seed": per_seed_top1}
    return metrics, ci95, breakdown


METRIC_NOTES = {
    "test_top1_mean": "top-1 (%) on the test split of the weights after the last epoch, mean over seeds",
    "test_top1_std": "sample standard deviation (n − 1) over seeds; 0 for one seed",
    "best_top1_mean": "the highest per-epoch test top-1 of each seed, mean over seeds",
    "epochs_to_target_mean": "first epoch whose test top-1 ≥ target_top1, mean over the runs that reached it "
                             "(absent when none did; runs_reaching_target counts them)",
    "seconds_to_target_mean": "training seconds (measured by the harness inside the sandbox, checkpoint "
                              "writing and evaluation excluded) up to that epoch, mean over the runs that "
                              "reached it; runs that never reach the target are left out, not averaged in",
    "samples_to_target_mean": "training examples consumed by the end of that epoch (batch × steps × epochs on "
                              "the fixed loop; the sample loop's counter, scored examples included), mean over "
                              "the runs that reached target_top1",
    "samples": "curve: training examples consumed by the end of each epoch",
    "ci95": "Student-t 95% interval of the mean over seeds (n − 1 degrees of freedom), clipped to the "
            "metric's range; it measures seed-to-seed variation, not the test set's sampling error; "
            "absent with one seed",
    "train_loss": "mean cross-entropy of the epoch's minibatches in training mode, as the harness in the "
                  "sandbox recorded it (not re-derived by the parent; never ranked)",
    "test_top1": "evaluated by the runner outside the sandbox from each epoch's weights (eval mode; float32 "
                 "on the CPU, bf16 autocast + channels_last on CUDA)",
}
