"""The paired comparison of two classifiers (leaderboard/boards/paired.py) against PROTOCOLS'
test vectors, scipy's binomial test and a literal index-resampling bootstrap, and the board's tie
rule on hand-built outcomes."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from leaderboard.boards import paired


def rights(n: int, wrong: list[int] | range) -> np.ndarray:
    right = np.ones(n, dtype=bool)
    right[list(wrong)] = False
    return right


def test_mcnemar_meets_the_protocols_test_vector():
    assert paired.mcnemar_exact(10, 2) == 158 / 4096
    assert round(paired.mcnemar_exact(10, 2), 4) == 0.0386
    assert paired.mcnemar_exact(2, 10) == 158 / 4096


@pytest.mark.parametrize("b,c", [(0, 0), (0, 1), (1, 0), (5, 5), (7, 3), (0, 30), (120, 80), (4800, 5200),
                                 (1, 2000), (3000, 2999)])
def test_mcnemar_equals_scipys_exact_binomial_test(b, c):
    n = b + c
    expected = 1.0 if n == 0 else binomtest(min(b, c), n, 0.5).pvalue
    assert paired.mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_mcnemar_takes_numpy_counts_as_integers_and_refuses_fractions():
    """NumPy int64 counts made 2**n wrap at n = 63 and gave p = -9e-15 for (60, 3)."""
    assert paired.mcnemar_exact(np.int64(60), np.int64(3)) == paired.mcnemar_exact(60, 3) > 0
    assert paired.mcnemar_exact(np.int32(2000), np.int32(5)) == paired.mcnemar_exact(2000, 5)
    with pytest.raises(TypeError):
        paired.mcnemar_exact(10.5, 2)


@pytest.mark.parametrize("b,c", [(1001, 1100), (8000, 8300), (400_000, 401_500), (2_500_000, 2_503_000)])
def test_mcnemar_beyond_the_exact_range_still_equals_scipy(b, c):
    """Above EXACT_MAX_N the tail is summed in floating point: ImageNet-C's pairs differ on up
    to millions of images, where the exact integers would take hours."""
    assert b + c > paired.EXACT_MAX_N
    expected = binomtest(min(b, c), b + c, 0.5).pvalue
    assert paired.mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9 if b + c <= 1_000_000 else 3e-8)


@pytest.mark.parametrize("k", [0, 1, 700, 990, 1000])
def test_mcnemar_s_floating_tail_agrees_with_exact_integers_just_past_the_switch(k):
    n = paired.EXACT_MAX_N + 1
    exact = min(1.0, 2 * sum(math.comb(n, j) for j in range(k + 1)) / 2**n)
    assert paired.mcnemar_exact(k, n - k) == pytest.approx(exact, rel=1e-11, abs=1e-300)


def test_mcnemar_refuses_negative_counts():
    with pytest.raises(ValueError, match="non-negative"):
        paired.mcnemar_exact(-1, 3)


def test_holm_meets_the_protocols_test_vector():
    assert paired.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_holm_caps_at_one_keeps_order_and_refuses_non_probabilities():
    assert paired.holm([0.5, 0.9]) == [1.0, 1.0]
    assert paired.holm([0.2]) == [0.2]
    assert paired.holm([]) == []
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        paired.holm([0.1, math.nan])


def test_discordant_counts_a_only_and_b_only_rights():
    a = np.array([1, 1, 1, 0, 0, 1], dtype=bool)
    b = np.array([1, 0, 0, 1, 0, 1], dtype=bool)
    assert paired.discordant(a, b) == (2, 1)
    with pytest.raises(ValueError, match="different numbers of images"):
        paired.discordant(a, b[:5])


def test_the_bootstrap_matches_literal_index_resampling():
    """Drawing the discordant counts is the index bootstrap in distribution: the interval equals
    one from resampling image indices outright, up to Monte Carlo error."""
    rng = np.random.default_rng(7)
    a, b = rng.random(2_000) < 0.85, rng.random(2_000) < 0.80
    low, high = paired.paired_bootstrap(a, b)
    idx = rng.integers(0, a.size, size=(10_000, a.size))
    literal = 100 * (a[idx].mean(axis=1) - b[idx].mean(axis=1))
    ref_low, ref_high = np.percentile(literal, [2.5, 97.5])
    assert low == pytest.approx(ref_low, abs=0.25) and high == pytest.approx(ref_high, abs=0.25)
    delta = 100 * (a.mean() - b.mean())
    assert low < delta < high


def test_the_bootstrap_resamples_within_each_set():
    """Set A: A is right on 10 images B misses; set B: the reverse. Resampled within sets, every
    resample keeps each set's size, so the spread is that of two independent set-level draws;
    a set-blind resample mixes them and is wider."""
    rng = np.random.default_rng(3)
    n = 400
    sets = np.repeat([0, 1], n // 2)
    a, b = rng.random(n) < 0.7, rng.random(n) < 0.7
    within = paired.paired_bootstrap(a, b, sets=sets)
    idx = np.concatenate([rng.integers(0, n // 2, size=(10_000, n // 2)),
                          rng.integers(n // 2, n, size=(10_000, n // 2))], axis=1)
    literal = np.percentile(100 * (a[idx].mean(axis=1) - b[idx].mean(axis=1)), [2.5, 97.5])
    assert within == pytest.approx(tuple(literal), abs=0.4)
    with pytest.raises(ValueError, match="keys for"):
        paired.paired_bootstrap(a, b, sets=sets[:-1])


def test_the_bootstrap_is_reproducible_and_zero_for_identical_models():
    rng = np.random.default_rng(0)
    a, b = rng.random(500) < 0.9, rng.random(500) < 0.9
    assert paired.paired_bootstrap(a, b) == paired.paired_bootstrap(a, b)
    assert paired.paired_bootstrap(a, a) == (0.0, 0.0)
    with pytest.raises(ValueError, match="no images"):
        paired.paired_bootstrap(a[:0], b[:0])


def test_ten_thousand_resamples_of_ten_thousand_images_take_well_under_a_second():
    import time

    rng = np.random.default_rng(1)
    a, b = rng.random(10_000) < 0.9, rng.random(10_000) < 0.88
    start = time.perf_counter()
    paired.paired_bootstrap(a, b, sets=np.arange(10_000) % 15)
    assert time.perf_counter() - start < 1.0


def test_paired_test_reports_the_point_estimate_counts_and_p():
    a = rights(100, range(0, 3))  # A wrong on images 0-2
    b = rights(100, range(3, 15))  # B wrong on images 3-14
    t = paired.paired_test(a, b)
    assert (t.n_images, t.b, t.c) == (100, 12, 3)
    assert t.delta == pytest.approx(9.0)
    assert t.p == pytest.approx(binomtest(3, 15, 0.5).pvalue)
    assert t.ci[0] <= 9.0 <= t.ci[1]


def test_models_that_differ_on_a_handful_of_images_share_rank_one():
    leader = rights(1_000, range(0, 50))
    close = rights(1_000, range(2, 54))  # b 4, c 2 against the leader
    marks = paired.tie_groups([leader, close])
    assert [(m.shared_rank, m.group_size) for m in marks] == [(1, 2), (1, 2)]
    assert marks[0].test is None
    assert (marks[1].test.b, marks[1].test.c) == (2, 4)
    assert marks[1].p_holm == pytest.approx(paired.mcnemar_exact(2, 4))


def test_models_that_differ_on_many_images_are_ranked_apart():
    leader = rights(1_000, range(0, 50))
    worse = rights(1_000, range(50, 150))  # b 50, c 100
    marks = paired.tie_groups([leader, worse])
    assert [(m.shared_rank, m.group_size) for m in marks] == [(1, 1), (2, 1)]


def test_ties_are_never_chained_and_the_rest_is_ranked_again():
    """B is tied with the leader A; C is tied with B but not with A: C does not join rank 1.
    The rest (C, D) forms a new round led by C, where D (close to C) shares rank 3."""
    n = 2_000
    a = rights(n, range(0, 100))
    b = rights(n, range(200, 306))  # 106 wrong, none shared with A: b 100, c 106 against A, tied
    c = rights(n, range(0, 112))  # A's 100 and 12 more: c 0, b 12 against A; against B 106 and 112
    d = rights(n, range(0, 115))  # C's 112 and 3 more
    assert paired.mcnemar_exact(*paired.discordant(c, b)) > 0.05  # C alone would tie with B
    marks = paired.tie_groups([a, b, c, d])
    assert [m.shared_rank for m in marks] == [1, 1, 3, 3]
    assert marks[3].leader == 2 and marks[3].m == 1
    assert marks[1].m == 3  # the first round compared A with all three others


def outcomes(wrong, n=40, **extra) -> dict:
    label = np.arange(n) % 10
    pred = label.copy()
    pred[list(wrong)] += 1
    return {"index": np.arange(n), "label": label, "pred": pred, **extra}


def test_align_pairs_files_listing_images_in_different_orders():
    a, b = outcomes([0, 1, 2]), outcomes([2, 3])
    order = np.random.default_rng(0).permutation(40)
    shuffled = {k: v[order] for k, v in b.items()}
    pair = paired.align(a, shuffled)
    assert paired.discordant(pair.right_a, pair.right_b) == (1, 2)  # A right on 3; B right on 0, 1
    assert pair.sets is None


def test_align_refuses_files_of_other_images_and_names_the_difference():
    with pytest.raises(ValueError, match="different numbers of images"):
        paired.align(outcomes([], n=40), outcomes([], n=39))
    shifted = outcomes([])
    shifted["index"] = shifted["index"] + 1
    with pytest.raises(ValueError, match="different images"):
        paired.align(outcomes([]), shifted)
    with pytest.raises(ValueError, match="'pred'"):
        paired.align({"index": np.arange(3), "label": np.zeros(3)}, outcomes([], n=3))


def test_align_scores_only_the_main_part_and_codes_corruption_cells_as_sets():
    part = np.array(["main"] * 30 + ["imagenet200"] * 10)
    pair = paired.align(outcomes([35], part=part), outcomes([0], part=part))
    assert pair.right_a.size == 30 and paired.discordant(pair.right_a, pair.right_b) == (1, 0)
    cells = {"corruption": np.repeat(["fog", "snow"], 20), "severity": np.tile(np.repeat([1, 2], 10), 2)}
    pair = paired.align(outcomes([], **cells), outcomes([], **cells))
    assert len(np.unique(pair.sets)) == 4 and np.bincount(pair.sets).tolist() == [10, 10, 10, 10]
