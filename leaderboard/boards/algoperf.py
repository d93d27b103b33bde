"""Time to target and AlgoPerf's performance-profile scoring, as pure functions over the training
curves of results (no database: selectors.py reads the rows, these do the arithmetic).

Source: shared/PROTOCOLS.md "Time-to-target and performance profiles (AlgoPerf)"; Dahl et al.,
"Benchmarking Neural Network Training Algorithms", arXiv 2306.07179; mlcommons/algorithmic-efficiency
``scoring/performance_profile.py`` and ``scoring/score_submissions.py``.

1. **Target** (:func:`workload_target`): per workload, among the public reference optimizers,
   the one whose per-seed best validation value has the best mean; the target is the median
   over its seeds of those per-seed bests (AlgoPerf: the median of the best reference's best
   validation values over its reruns).
2. **Time to target** (:func:`time_to_target`): a seed's time is its clock (``seconds`` or
   ``samples``) at the first curve point that reaches the target (≥ when higher is better, ≤
   when lower is, as for losses or bits per byte); ∞ when none does. A submission's time is the
   median over its seeds, ∞ counting (AlgoPerf: the median of its studies).
3. **Scores** (:func:`performance_ratios`, :func:`profile`, :func:`score_exact`,
   :func:`score_trapz`): r_{s,w} = t_{s,w} / min_s t_{s,w}, ∞ where r > ``CAP`` (4); ρ_s(τ) =
   #{w : r_{s,w} ≤ τ} / n, n the number of workloads (fixed by the catalogue, not counted from
   results); B_s = (1/(CAP − 1))∫_1^CAP ρ_s(τ)dτ, in closed form Σ_w max(0, CAP − r_{s,w}) /
   ((CAP − 1)n), and as AlgoPerf's code computes it, the trapezoid rule over 100 evenly spaced
   τ in [1, CAP]. Test vector r = (1, 2, ∞): exact 0.5556, trapezoid 0.5572.

Ratios are to the current field: a faster submission moves everyone's score (PROTOCOLS: freeze
the reference set per season).
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

INF = math.inf
CAP = 4.0  # τ_max: a run more than 4× slower than the fastest counts as not reaching the target
TAU_POINTS = 100  # AlgoPerf's np.linspace(1, 4, 100) for the trapezoid rule
CLOCKS = ("seconds", "samples")  # what a curve measures time in: training seconds, training examples consumed

S = TypeVar("S", bound=Hashable)
W = TypeVar("W", bound=Hashable)


def validation_key(primary_metric: str) -> str:
    """The per-seed curve key whose mean over seeds is the task's primary metric: ``test_top1``
    for ``test_top1_mean`` (image tasks), ``val_bpb`` for ``val_bpb_mean`` (the transformer)."""
    return primary_metric.removesuffix("_mean")


def seed_curves(curves: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The per-seed curves of a result's ``curves`` (keys ``seed_<n>``), in seed order."""
    if not isinstance(curves, Mapping):
        return []
    return [curves[k] for k in sorted(curves, key=str) if str(k).startswith("seed_") and isinstance(curves[k], dict)]


def _numbers(values: Any) -> list[float] | None:
    if not isinstance(values, list) or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return None
    return [float(v) for v in values]


def reaches(value: float, target: float, higher_is_better: bool) -> bool:
    """Whether a validation value meets the target: ≥ for accuracies, ≤ for losses and bits per byte."""
    return value >= target if higher_is_better else value <= target


def seed_best(curve: Mapping[str, Any], key: str, higher_is_better: bool) -> float | None:
    """The best finite value of one seed's ``key`` curve (max or min by direction); None when it
    has none."""
    values = [v for v in (_numbers(curve.get(key)) or []) if math.isfinite(v)]
    if not values:
        return None
    return max(values) if higher_is_better else min(values)


@dataclass(frozen=True)
class Target:
    """A workload's target: ``value`` of the curve ``key`` (same unit as the curve: % top-1, bits
    per byte), set by the reference optimizer ``reference`` as the median over its ``seeds`` seeds
    of each seed's best value; ``reference_mean`` is the mean of those bests (what picked it)."""

    value: float
    reference: str
    seeds: int
    key: str
    higher_is_better: bool
    reference_mean: float

    @property
    def rule(self) -> str:
        """The comparison a run must pass, e.g. ``test_top1 ≥ 96.4``."""
        return f"{self.key} {'≥' if self.higher_is_better else '≤'} {self.value:.4g}"

    @property
    def source(self) -> str:
        """Where it came from, e.g. ``median best of Adam over 5 seeds``."""
        return f"median best of {self.reference} over {self.seeds} seed{'s' if self.seeds != 1 else ''}"


def workload_target(references: Mapping[str, Mapping[str, Any]], *, key: str,
                    higher_is_better: bool) -> Target | None:
    """The target of one workload from its reference optimizers' results: ``references`` maps
    each reference's name to its result's ``curves`` ({seed_<n>: {key: [value per point]}}). The
    best reference is the one with the best mean of per-seed bests (ties: the first name in
    sorted order); the target is the median of its per-seed bests. None when no reference has a
    finite value of ``key``."""
    candidates = []
    for name in sorted(references):
        bests = [b for c in seed_curves(references[name]) if (b := seed_best(c, key, higher_is_better)) is not None]
        if bests:
            candidates.append((statistics.fmean(bests), name, bests))
    if not candidates:
        return None
    sign = -1.0 if higher_is_better else 1.0
    mean, name, bests = min(candidates, key=lambda c: (sign * c[0], c[1]))
    return Target(float(statistics.median(bests)), name, len(bests), key, higher_is_better, mean)


def seed_time_to_target(curve: Mapping[str, Any], target: Target, clock: str) -> float | None:
    """One seed's ``clock`` value (``"seconds"``: training seconds; ``"samples"``: training examples
    consumed) at the first point of its ``target.key`` curve that reaches the target; ∞ when none
    does; None when the curve lacks either list or their lengths differ (an older result without
    ``samples``: unknown, not ∞)."""
    values, times = _numbers(curve.get(target.key)), _numbers(curve.get(clock))
    if values is None or times is None or len(values) != len(times):
        return None
    for value, time in zip(values, times, strict=True):
        if math.isfinite(value) and reaches(value, target.value, target.higher_is_better):
            return time
    return INF


def median_time(times: Sequence[float]) -> float:
    """The median of per-seed times, ∞ counting as the largest (so a majority of seeds that never
    reach the target makes the median ∞). Raises ValueError on an empty sequence."""
    if not times:
        raise ValueError("no seeds: a median time needs at least one")
    ordered = sorted(times)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    low, high = ordered[middle - 1], ordered[middle]
    return INF if INF in (low, high) else (low + high) / 2


def time_to_target(curves: Mapping[str, Any] | None, target: Target, clock: str) -> float | None:
    """A result's time to target in ``clock`` units: the median over its seeds of
    :func:`seed_time_to_target` (∞ when most seeds never reach it); None when it has no seed
    curves or a seed's curve cannot say (no ``clock`` list)."""
    times = [seed_time_to_target(c, target, clock) for c in seed_curves(curves)]
    if not times or any(t is None for t in times):
        return None
    return median_time([t for t in times if t is not None])


def performance_ratios(times: Mapping[S, Mapping[W, float | None]], workloads: Sequence[W],
                       cap: float = CAP) -> dict[S, list[float]]:
    """r_{s,w} = t_{s,w} / min_s t_{s,w} for every submission s of ``times`` ({s: {w: time}})
    and every workload w of ``workloads`` (in that order); ∞ where s has no time on w, never
    reached the target there, nobody did, or r > ``cap`` (AlgoPerf's cap)."""
    fastest: dict[W, float] = {}
    for w in workloads:
        finite = [t for per in times.values() if (t := per.get(w)) is not None and math.isfinite(t) and t > 0]
        fastest[w] = min(finite) if finite else INF
    ratios: dict[S, list[float]] = {}
    for s, per in times.items():
        row = []
        for w in workloads:
            t = per.get(w)
            r = t / fastest[w] if t is not None and math.isfinite(t) and t > 0 and math.isfinite(fastest[w]) else INF
            row.append(r if r <= cap else INF)
        ratios[s] = row
    return ratios


def taus(cap: float = CAP, points: int = TAU_POINTS) -> list[float]:
    """``points`` evenly spaced τ from 1 to ``cap``, both ends included (np.linspace)."""
    return [1.0 + (cap - 1.0) * i / (points - 1) for i in range(points)]


def profile(ratios: Sequence[float], n: int, at: Sequence[float]) -> list[float]:
    """ρ(τ) = #{w : r_w ≤ τ} / n at each τ of ``at``; ``n`` is the number of workloads."""
    if n <= 0:
        raise ValueError("a performance profile needs at least one workload (n ≥ 1)")
    return [sum(1 for r in ratios if r <= tau) / n for tau in at]


def profile_steps(ratios: Sequence[float], n: int, cap: float = CAP) -> list[tuple[float, float]]:
    """ρ as a step function for drawing: (τ, ρ(τ)) at τ = 1, at each finite ratio, and at ``cap``."""
    finite = sorted(r for r in ratios if math.isfinite(r))
    points = [1.0, *finite, cap]
    return [(tau, value) for tau, value in zip(points, profile(ratios, n, points), strict=True)]


def score_exact(ratios: Sequence[float], n: int, cap: float = CAP) -> float:
    """B = (1/(cap − 1))∫_1^cap ρ(τ)dτ in closed form: Σ_w max(0, cap − r_w) / ((cap − 1)n)."""
    if n <= 0:
        raise ValueError("a benchmark score needs at least one workload (n ≥ 1)")
    return sum(max(0.0, cap - max(1.0, r)) for r in ratios) / ((cap - 1.0) * n)


def score_trapz(ratios: Sequence[float], n: int, cap: float = CAP, points: int = TAU_POINTS) -> float:
    """B as AlgoPerf's ``score_submissions.py`` computes it: np.trapz of ρ over ``points`` evenly
    spaced τ in [1, cap], divided by (cap − 1)."""
    at = taus(cap, points)
    rho = profile(ratios, n, at)
    area = sum((at[i + 1] - at[i]) * (rho[i] + rho[i + 1]) / 2 for i in range(len(at) - 1))
    return area / (cap - 1.0)
