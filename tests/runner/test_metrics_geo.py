"""GeoDE and Dollar Street: any-of accuracy, per-region accuracy with intervals resampled within
each region, worst region, disparity, Europe − Africa, income quartiles and their gap."""

from __future__ import annotations

import numpy as np
import pytest

from runner.metrics import classification, geo, results
from runner.spec import validate_result


def top5(*first):
    """A top-5 row starting with ``first`` and padded with classes nobody accepts."""
    return list(first) + [900 + i for i in range(5 - len(first))]


# (region, accepted 1k indices, top-5 prediction, object)
GEODE_ITEMS = [
    ("Africa", [10, 11], top5(10), "bag"),  # hit
    ("Africa", [20], top5(3, 20), "bag"),  # top-1 outside the accepted indices, top-5 hits
    ("Africa", [30], top5(1, 2, 3, 4, 5), "stove"),  # miss
    ("Europe", [40], top5(40), "stove"),  # hit
    ("Europe", [41, 42], top5(42), "stove"),  # hit on the second accepted index
    ("EastAsia", [50], top5(50), "bag"),  # the region's single image, right
    ("Americas", [60], top5(1, 2, 3, 4, 5), "bag"),  # a region without a correct prediction
    ("Americas", [61], top5(7, 8, 9, 6, 5), "stove"),
]


def geode_result(**options):
    regions = np.array([r for r, *_ in GEODE_ITEMS], dtype=object)
    accepted = [a for _, a, _, _ in GEODE_ITEMS]
    predictions = np.array([p for _, _, p, _ in GEODE_ITEMS])
    objects = [(o,) for *_, o in GEODE_ITEMS]
    return results.result_geode(predictions, accepted, regions, objects=objects, **options)


def test_a_geo_hit_is_any_accepted_index_within_the_top_k():
    predictions = np.array([top5(3, 20)])
    assert classification.hits_any(predictions, [[20, 21]], 1).tolist() == [False]
    assert classification.hits_any(predictions, [[20, 21]], 5).tolist() == [True]


def test_geode_reports_overall_per_region_worst_disparity_and_the_europe_africa_gap():
    doc = geode_result()
    validate_result(doc, "geode")
    m = doc["metrics"]
    assert m["top1"] == pytest.approx(100 * 4 / 8)  # over images, not regions
    assert m["top5"] == pytest.approx(100 * 5 / 8)
    regions = doc["breakdown"]["per_region"]
    assert regions["Africa"]["top1"] == pytest.approx(100 / 3)
    assert regions["Africa"]["top5"] == pytest.approx(200 / 3)
    assert regions["Europe"]["top1"] == 100.0
    assert regions["Africa"]["n"] == 3 and regions["EastAsia"]["n"] == 1
    assert m["worst_region_top1"] == 0.0
    assert m["disparity"] == 100.0  # Europe or EastAsia (100) − Americas (0)
    assert m["gap_europe_africa"] == pytest.approx(100 - 100 / 3)
    assert doc["breakdown"]["per_object"]["bag"] == {"top1": 50.0, "top5": 75.0, "n": 4}


def test_a_region_without_a_correct_prediction_scores_zero_with_a_zero_width_interval():
    doc = geode_result()
    americas = doc["breakdown"]["per_region"]["Americas"]
    assert americas["top1"] == 0.0 and americas["top5"] == 0.0
    assert americas["ci95"]["top1"] == [0.0, 0.0]
    assert doc["ci95"]["worst_region_top1"] == [0.0, 0.0]


def test_a_region_with_a_single_image_resamples_only_that_image():
    east_asia = geode_result()["breakdown"]["per_region"]["EastAsia"]
    assert east_asia == {
        "top1": 100.0,
        "top5": 100.0,
        "n": 1,
        "ci95": {"top1": [100.0, 100.0], "top5": [100.0, 100.0]},
    }


def test_geo_intervals_bracket_the_metrics_and_repeat_with_the_seed():
    first, second = geode_result(seed=5), geode_result(seed=5)
    assert first["ci95"] == second["ci95"]
    for name in ("top1", "top5", "gap_europe_africa"):
        low, high = first["ci95"][name]
        assert low <= first["metrics"][name] <= high
    assert first["env"]["bootstrap"]["resampled_within"] == "each region"


def test_region_names_stay_as_spelled_in_the_metadata():
    doc = geode_result()
    assert set(doc["breakdown"]["per_region"]) == {"Africa", "Europe", "EastAsia", "Americas"}


@pytest.mark.parametrize(
    ("income", "quartile"),
    [
        (40, "q1"),
        (195, "q1"),
        (195.5, "q2"),
        (685, "q2"),
        (686, "q3"),
        (1963, "q3"),
        (1964, "q4"),
        (15000, "q4"),
    ],
)
def test_dollar_street_income_quartiles_run_from_q1_poorest_to_q4_richest(income, quartile):
    assert geo.income_quartile(np.array([income]))[0] == quartile


# (region, income, right at top-1, topics)
STREET_ITEMS = [
    ("Africa", 100, True, ("toilet",)),
    ("Africa", 150, False, ("tv",)),
    ("Europe", 3000, True, ("tv",)),
    ("Europe", 2500, True, ("toilet", "bathroom/toilet")),
    ("Asia", 500, False, ("tv",)),
    ("Asia", 1000, True, ("tv",)),
    ("The Americas", 195, False, ("toilet",)),
    ("The Americas", 1964, True, ("tv",)),
]


def street_result():
    regions = np.array([r for r, *_ in STREET_ITEMS], dtype=object)
    incomes = np.array([i for _, i, _, _ in STREET_ITEMS], dtype=float)
    accepted = [[861] for _ in STREET_ITEMS]
    predictions = np.array([top5(861) if right else top5(1) for _, _, right, _ in STREET_ITEMS])
    topics = [t for *_, t in STREET_ITEMS]
    return results.result_dollarstreet(predictions, accepted, regions, incomes, topics=topics)


def test_dollar_street_adds_the_income_gap_richest_minus_poorest_quartile():
    doc = street_result()
    validate_result(doc, "dollarstreet")
    quartiles = doc["breakdown"]["per_income"]
    assert quartiles["q1"]["top1"] == pytest.approx(100 / 3)  # incomes 100 (right), 150, 195
    assert quartiles["q4"]["top1"] == 100.0  # 3000, 2500, 1964
    assert quartiles["q2"] == {**quartiles["q2"], "top1": 0.0, "n": 1}
    assert doc["metrics"]["income_gap"] == pytest.approx(100 - 100 / 3)
    assert doc["ci95"]["income_gap"][0] <= doc["metrics"]["income_gap"] <= doc["ci95"]["income_gap"][1]


def test_dollar_street_finds_europe_and_africa_among_its_region_names():
    doc = street_result()
    assert doc["metrics"]["gap_europe_africa"] == 50.0  # Europe 2/2 − Africa 1/2
    assert doc["metrics"]["worst_region_top1"] == 50.0
    assert doc["metrics"]["disparity"] == 50.0
    assert "The Americas" in doc["breakdown"]["per_region"]
    assert geo.find_region(["Africa", "The Americas"], "americas") == "The Americas"


def test_an_image_with_several_topics_counts_for_each_topic():
    per_topic = street_result()["breakdown"]["per_object"]
    assert per_topic["bathroom/toilet"] == {"top1": 100.0, "top5": 100.0, "n": 1}
    assert per_topic["toilet"]["n"] == 3
    assert per_topic["toilet"]["top1"] == pytest.approx(200 / 3)


def test_a_geo_set_without_african_images_cannot_report_the_gap():
    from runner.spec import ErrorKind, EvaluationError

    with pytest.raises(EvaluationError) as caught:
        results.result_geode(np.array([top5(1)]), [[1]], np.array(["Europe"], dtype=object))
    assert caught.value.kind == ErrorKind.DATASET_MISSING
    assert "Africa" in caught.value.message
