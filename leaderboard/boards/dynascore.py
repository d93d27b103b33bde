"""Dynascore: one ranking from several metrics under the reader's own weights.

Source: shared/PROTOCOLS.md "Dynascore (user-weighted ranking)"; Ma et al., "Dynaboard: An
Evaluation-As-A-Service Platform for Holistic Next-Generation Benchmarking", arXiv 2106.06052;
facebookresearch/dynabench ``api/models/score.py`` (``dynascore``), 0a80494.

Each metric m becomes a utility ``u_m = direction·m + offset`` (more is better). The models are
sorted by performance; over consecutive pairs whose performance differs by more than
``1e-4·max|perf|`` the *average marginal rate of substitution* is

    AMRS_m = mean over kept pairs of |Δu_m| / |Δperf|        (AMRS_perf = 1),

so ``u_m / AMRS_m`` is in points of performance, and

    Dynascore = Σ_m w_m · u_m / AMRS_m  /  Σ_m w_m

over the metrics kept. A metric whose AMRS is 0 (constant over the models) or undefined (fewer
than two models, or no pair of distinct performance) is dropped, with the reason, and its weight
leaves the sum. The AMRS depend on the models, never on the weights: ``normalize`` computes the
points once and ``weighted`` (or the page's script) only sums them.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

PERFORMANCE = "performance"
PAIR_THRESHOLD = 1e-4  # relative to max |performance|: closer pairs are skipped (PROTOCOLS)
WEIGHT_MIN, WEIGHT_MAX = 0, 5
DEFAULT_PERFORMANCE_WEIGHT = 4  # dynabench's defaults (api/models/task.py)
DEFAULT_WEIGHT = 1


@dataclass(frozen=True)
class Normalized:
    """The metrics in points of performance. ``points[name][i]``: model i's ``u/AMRS`` for each
    kept metric (performance included, AMRS 1); ``amrs``: each kept metric's AMRS; ``dropped``:
    metric name → why it was left out."""

    points: dict[str, list[float]]
    amrs: dict[str, float]
    dropped: dict[str, str] = field(default_factory=dict)


def amrs(performance: Sequence[float], utility: Sequence[float]) -> float | None:
    """The average marginal rate of substitution of ``utility`` for ``performance`` (equal-length
    sequences, one value per model): the mean of ``|Δu| / |Δperf|`` over consecutive models in
    performance order, skipping pairs with ``|Δperf| <= 1e-4·max|perf|``. None when no pair is
    kept (under two models, or all of equal performance). Raises ValueError on unequal lengths
    or a value that is not finite."""
    if len(performance) != len(utility):
        raise ValueError(f"{len(performance)} performance values but {len(utility)} utilities")
    if not all(math.isfinite(v) for v in (*performance, *utility)):
        raise ValueError("Dynascore needs finite values")
    if len(performance) < 2:
        return None
    order = sorted(range(len(performance)), key=lambda i: performance[i])
    threshold = PAIR_THRESHOLD * max(abs(v) for v in performance)
    rates = []
    for a, b in zip(order, order[1:], strict=False):
        step = performance[b] - performance[a]
        if abs(step) > threshold:
            rates.append(abs(utility[b] - utility[a]) / abs(step))
    return sum(rates) / len(rates) if rates else None


def normalize(performance: Sequence[float], utilities: Mapping[str, Sequence[float]]) -> Normalized:
    """Each model's metrics in points of performance. ``performance``: one value per model;
    ``utilities``: metric name → the models' utilities ``direction·m + offset`` in the same order
    (see the module docstring). A metric with AMRS 0 or undefined is in ``dropped`` with its
    reason; if performance itself has no pair of distinct values every other metric is dropped
    too (its AMRS is undefined). Raises ValueError as ``amrs`` does, or for the reserved name."""
    if PERFORMANCE in utilities:
        raise ValueError(f"{PERFORMANCE!r} is the performance itself, not another metric")
    n = len(performance)
    points: dict[str, list[float]] = {PERFORMANCE: [float(v) for v in performance]}
    rates: dict[str, float] = {PERFORMANCE: 1.0}
    dropped: dict[str, str] = {}
    for name, values in utilities.items():
        rate = amrs(performance, values)
        if rate is None:
            dropped[name] = ("fewer than two results to compare" if n < 2 else
                             "every result has the same performance, so no rate can be measured")
        elif rate == 0:
            dropped[name] = "the same for every result (AMRS 0)"
        else:
            rates[name] = rate
            points[name] = [float(v) / rate for v in values]
    return Normalized(points=points, amrs=rates, dropped=dropped)


def weighted(normalized: Normalized, weights: Mapping[str, float]) -> list[float] | None:
    """Each model's Dynascore: ``Σ w_m·points_m / Σ w_m`` over the kept metrics, a missing weight
    counting as 0. None when the kept metrics' weights sum to 0 (no ranking is asked for).
    Raises ValueError for a negative or non-finite weight."""
    for name, w in weights.items():
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"weight of {name!r} must be a finite number >= 0, not {w!r}")
    used = {name: float(weights.get(name, 0)) for name in normalized.points}
    total = sum(used.values())
    if total == 0:
        return None
    n = len(normalized.points[PERFORMANCE])
    return [sum(w * normalized.points[name][i] for name, w in used.items()) / total for i in range(n)]


def default_weights(names: Sequence[str]) -> dict[str, int]:
    """Dynabench's defaults: performance 4, every other metric 1."""
    return {name: DEFAULT_PERFORMANCE_WEIGHT if name == PERFORMANCE else DEFAULT_WEIGHT for name in names}
