"""Time to target and AlgoPerf's scoring (leaderboard/boards/algoperf.py), by hand computations:
the target rule, a run's and a submission's time in both directions, ∞ and its median, the
ratios with the cap, and the score's test vector from shared/PROTOCOLS.md."""
from __future__ import annotations

import math

import numpy as np
import pytest

from leaderboard.boards import algoperf
from leaderboard.boards.algoperf import INF, Target

ACC = "test_top1"
BPB = "val_bpb"


def curves(*seeds: dict) -> dict:
    return {f"seed_{i}": seed for i, seed in enumerate(seeds)}


def seed(values: list[float], *, samples: list[int] | None = None, seconds: list[float] | None = None,
         key: str = ACC) -> dict:
    points = range(1, len(values) + 1)
    return {"epoch": list(points), key: values, "samples": samples or [100 * p for p in points],
            "seconds": seconds or [float(p) for p in points]}


def test_the_target_is_the_median_best_of_the_reference_with_the_best_mean_best():
    references = {
        # per-seed bests 96, 98, 97: mean 97 (the best), median 97
        "Adam": curves(seed([90.0, 96.0, 95.0]), seed([97.0, 98.0, 98.0]), seed([93.0, 97.0, 96.0])),
        # bests 99, 90, 91: mean 93.3 — one lucky seed does not make it the reference
        "SGD with momentum": curves(seed([99.0, 80.0]), seed([85.0, 90.0]), seed([91.0, 91.0])),
        "AdaGrad": {},  # no result curves: left out
    }
    target = algoperf.workload_target(references, key=ACC, higher_is_better=True)
    assert (target.value, target.reference, target.seeds) == (97.0, "Adam", 3)
    assert target.reference_mean == pytest.approx(97.0)
    assert target.source == "median best of Adam over 3 seeds"
    assert target.rule == "test_top1 ≥ 97"


def test_a_lower_is_better_target_takes_minima_and_the_lowest_mean():
    references = {
        "Adam": curves(seed([2.5, 1.9, 1.8], key=BPB), seed([2.4, 1.7, 1.75], key=BPB)),  # bests 1.8, 1.7
        "SGD + clipping": curves(seed([3.0, 2.1], key=BPB), seed([2.9, 2.0], key=BPB)),  # bests 2.1, 2.0
    }
    target = algoperf.workload_target(references, key=BPB, higher_is_better=False)
    assert target.reference == "Adam" and target.value == pytest.approx(1.75)  # median of 1.8 and 1.7
    assert target.rule == "val_bpb ≤ 1.75"


def test_no_reference_with_a_finite_value_gives_no_target():
    assert algoperf.workload_target({}, key=ACC, higher_is_better=True) is None
    assert algoperf.workload_target({"Adam": curves(seed([float("nan")]))}, key=ACC, higher_is_better=True) is None


def accuracy_target(value: float) -> Target:
    return Target(value, "Adam", 3, ACC, True, value)


def test_a_seeds_time_is_its_clock_at_the_first_point_reaching_the_target_in_either_direction():
    run = seed([80.0, 97.0, 96.0, 99.0], samples=[640, 1280, 1920, 2560], seconds=[1.5, 3.0, 4.5, 6.0])
    assert algoperf.seed_time_to_target(run, accuracy_target(97.0), "samples") == 1280  # ≥: equal counts
    assert algoperf.seed_time_to_target(run, accuracy_target(97.0), "seconds") == 3.0
    assert algoperf.seed_time_to_target(run, accuracy_target(98.0), "seconds") == 6.0
    assert algoperf.seed_time_to_target(run, accuracy_target(99.5), "seconds") == INF

    bpb = Target(1.9, "Adam", 3, BPB, False, 1.9)
    text = {"step": [100, 200, 300], BPB: [2.5, 1.9, 1.8], "samples": [3200, 6400, 9600], "seconds": [20.0, 40.0, 60.0]}
    assert algoperf.seed_time_to_target(text, bpb, "samples") == 6400  # ≤: 1.9 reaches 1.9
    assert algoperf.seed_time_to_target(text, Target(1.0, "Adam", 3, BPB, False, 1.0), "seconds") == INF


def test_a_curve_without_the_clock_is_unknown_not_never():
    old = {"epoch": [1, 2], ACC: [90.0, 99.0], "seconds": [1.0, 2.0]}  # before the runner recorded samples
    assert algoperf.seed_time_to_target(old, accuracy_target(95.0), "samples") is None
    assert algoperf.seed_time_to_target(old, accuracy_target(95.0), "seconds") == 2.0
    assert algoperf.time_to_target(curves(old), accuracy_target(95.0), "samples") is None
    assert algoperf.time_to_target({}, accuracy_target(95.0), "seconds") is None


def test_a_submissions_time_is_the_median_over_seeds_with_never_counting_as_infinity():
    target = accuracy_target(97.0)
    seeds = [seed([97.0, 98.0], seconds=[1.0, 2.0]), seed([90.0, 97.5], seconds=[1.5, 3.0]),
             seed([90.0, 91.0])]  # 1 s, 3 s, never
    assert algoperf.time_to_target(curves(*seeds), target, "seconds") == 3.0
    assert algoperf.time_to_target(curves(seeds[0], seeds[2], seeds[2]), target, "seconds") == INF  # most never
    assert algoperf.time_to_target(curves(seeds[0], seeds[1]), target, "seconds") == 2.0  # even: the mean of two
    assert algoperf.median_time([1.0, INF]) == INF and algoperf.median_time([INF]) == INF
    with pytest.raises(ValueError):
        algoperf.median_time([])


def test_ratios_are_to_the_fastest_and_past_the_cap_count_as_never():
    times = {"fast": {"digits": 10.0, "cifar": 500.0}, "slow": {"digits": 30.0, "cifar": 100.0},
             "never": {"digits": INF}, "late": {"digits": 40.0, "cifar": 400.0}}
    ratios = algoperf.performance_ratios(times, ["digits", "cifar"])
    assert ratios["fast"] == [1.0, INF]  # 5× the fastest on cifar: past the cap of 4
    assert ratios["slow"] == [3.0, 1.0]
    assert ratios["late"] == [4.0, 4.0]  # exactly at the cap still counts
    assert ratios["never"] == [INF, INF]  # never reached, and no result on cifar
    assert algoperf.performance_ratios({"a": {"w": INF}}, ["w"]) == {"a": [INF]}  # nobody reached it


def test_the_score_matches_the_protocols_test_vector_exactly_and_by_the_trapezoid_rule():
    ratios = [1.0, 2.0, INF]
    assert algoperf.score_exact(ratios, 3) == pytest.approx(5 / 9)
    assert round(algoperf.score_exact(ratios, 3), 4) == 0.5556
    assert round(algoperf.score_trapz(ratios, 3), 4) == 0.5572
    grid = np.linspace(1, 4, 100)
    rho = [sum(r <= t for r in ratios) / 3 for t in grid]
    assert algoperf.score_trapz(ratios, 3) == pytest.approx(np.trapezoid(rho, grid) / 3, abs=1e-12)
    assert algoperf.taus() == pytest.approx(list(grid))


def test_n_counts_every_workload_so_a_missing_one_lowers_the_score():
    assert algoperf.score_exact([1.0], 1) == 1.0
    assert algoperf.score_exact([1.0], 2) == 0.5  # fastest where it ran, absent on the other workload
    assert algoperf.score_exact([INF, INF], 2) == 0.0
    with pytest.raises(ValueError):
        algoperf.score_exact([], 0)


def test_the_profile_steps_up_at_each_finite_ratio():
    steps = algoperf.profile_steps([1.0, 2.5, INF], 3)
    assert steps == [(1.0, pytest.approx(1 / 3)), (1.0, pytest.approx(1 / 3)), (2.5, pytest.approx(2 / 3)),
                     (4.0, pytest.approx(2 / 3))]
    assert all(math.isfinite(tau) for tau, _ in steps)  # the page's JSON never holds Infinity


def test_the_validation_curve_is_the_primary_metric_without_its_mean_suffix():
    assert algoperf.validation_key("test_top1_mean") == "test_top1"
    assert algoperf.validation_key("val_bpb_mean") == "val_bpb"
