"""Dynascore (leaderboard/boards/dynascore.py) against PROTOCOLS.md's test vector and its edge cases."""
from __future__ import annotations

import pytest

from leaderboard.boards import dynascore


def _vector():
    perf = [70.0, 80.0, 90.0]
    throughput = [300.0, 200.0, 100.0]  # direction +1, offset 0
    memory = [16 - m for m in (2.0, 4.0, 8.0)]  # direction -1, offset: the instance's 16 GiB
    return perf, {"throughput": throughput, "memory": memory}


def test_the_protocols_test_vector():
    perf, utilities = _vector()
    normalized = dynascore.normalize(perf, utilities)
    assert normalized.amrs == pytest.approx({"performance": 1.0, "throughput": 10.0, "memory": 0.3})
    scores = dynascore.weighted(normalized, {"performance": 4, "throughput": 1, "memory": 1})
    assert [round(s, 2) for s in scores] == [59.44, 63.33, 66.11]


def test_weights_are_divided_by_their_sum_and_change_the_order():
    perf, utilities = _vector()
    normalized = dynascore.normalize(perf, utilities)
    doubled = dynascore.weighted(normalized, {"performance": 8, "throughput": 2, "memory": 2})
    assert [round(s, 2) for s in doubled] == [59.44, 63.33, 66.11]
    speed_only = dynascore.weighted(normalized, {"performance": 0, "throughput": 5, "memory": 0})
    assert speed_only == pytest.approx([30.0, 20.0, 10.0])  # the fastest model now leads


def test_a_constant_metric_is_dropped_and_its_weight_leaves_the_sum():
    normalized = dynascore.normalize([70.0, 80.0, 90.0], {"parameters": [-11.2, -11.2, -11.2]})
    assert "AMRS 0" in normalized.dropped["parameters"]
    assert dynascore.weighted(normalized, {"performance": 4, "parameters": 5}) == pytest.approx([70, 80, 90])


def test_undefined_amrs_under_two_models_or_equal_performance():
    one = dynascore.normalize([70.0], {"throughput": [100.0]})
    assert "fewer than two" in one.dropped["throughput"]
    flat = dynascore.normalize([70.0, 70.0 + 1e-5], {"throughput": [100.0, 200.0]})
    assert "same performance" in flat.dropped["throughput"]


def test_pairs_closer_than_the_threshold_are_skipped():
    # 80 and 80.005 differ by less than 1e-4 * 90: only the pairs (70, 80) and (80.005, 90) count.
    rate = dynascore.amrs([70.0, 80.0, 80.005, 90.0], [0.0, 10.0, 500.0, 520.0])
    assert rate == pytest.approx((10 / 10 + 20 / 9.995) / 2)


def test_all_weights_zero_asks_for_no_ranking_and_bad_input_is_refused():
    perf, utilities = _vector()
    normalized = dynascore.normalize(perf, utilities)
    assert dynascore.weighted(normalized, {"performance": 0}) is None
    with pytest.raises(ValueError, match="throughput"):
        dynascore.weighted(normalized, {"throughput": -1})
    with pytest.raises(ValueError, match="finite"):
        dynascore.amrs([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="3 performance values but 2"):
        dynascore.amrs([1.0, 2.0, 3.0], [1.0, 2.0])
    assert dynascore.default_weights(["performance", "memory"]) == {"performance": 4, "memory": 1}
