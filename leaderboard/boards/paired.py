"""Paired comparison of two classifiers scored on the same images (PROTOCOLS, "Paired comparison of
two classifiers"): exact McNemar on the discordant images, a paired bootstrap interval for the
accuracy difference, Holm's step-down correction across comparisons, and the board's tie rule.

Pure numpy and ``math``: the site never imports scipy (the tests check McNemar against
``scipy.stats.binomtest``). Inputs are boolean "right" vectors aligned by image (``pred == label``
of each model's per-image outcomes).
"""
from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 10_000  # PROTOCOLS: R = 10,000 bootstrap resamples
SEED = 0  # fixed, so a page shows the same interval on every rendering
ALPHA = 0.05  # p̃ below this separates two models
SET_CHUNK = 1_000_000  # resamples × sets drawn at once in the bootstrap (24 MB of counts)
EXACT_MAX_N = 2_000  # McNemar in exact integers up to this many discordant images (mcnemar_exact)


def discordant(right_a: np.ndarray, right_b: np.ndarray) -> tuple[int, int]:
    """(b, c): b = #{A right, B wrong}, c = #{A wrong, B right} over images aligned by position.
    Raises ValueError when the two vectors differ in length."""
    a, b = _bools(right_a, right_b)
    return int(np.count_nonzero(a & ~b)), int(np.count_nonzero(~a & b))


def mcnemar_exact(b: int, c: int) -> float:
    """Exact (binomial) two-sided McNemar p-value from the discordant counts: with n = b + c,
    p = min(1, 2·Σ_{k=0}^{min(b,c)} C(n, k) / 2ⁿ), the same as scipy's ``binomtest(min(b, c), n,
    0.5)``; n = 0 gives 1. Test vector: b 10, c 2 → 158/4096 ≈ 0.0386. Raises ValueError for
    negative counts, TypeError for counts that are not integers (NumPy integers are taken as
    Python's: their fixed width made 2ⁿ wrap and p negative).

    Up to :data:`EXACT_MAX_N` discordant images the sum is taken in exact integers (the terms by
    their recurrence; correctly rounded). Beyond, exact integers cost O(n²) bit operations (41 ms
    a test at n = 16,000, hours at ImageNet-C's million), so the tail is summed in floating point
    relative to its largest term: t_{j−1}/t_j = j/(n − j + 1), the ratios' running products summed
    (they only shrink), and log t_k from ``math.lgamma``, whose rounding bounds the relative error:
    about 1e-9 at n = 10⁶ and 1e-8 at 5·10⁶, far below what separates p from 0.05
    (tests/unit/test_paired.py checks both paths against scipy and each other)."""
    b, c = operator.index(b), operator.index(c)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be non-negative, got b={b}, c={c}")
    n, k_max = b + c, min(b, c)
    if n == 0 or 2 * k_max >= n:  # b == c: the lower tail alone is at least one half
        return 1.0
    if n <= EXACT_MAX_N:
        term = total = 1  # C(n, 0)
        for k in range(k_max):
            term = term * (n - k) // (k + 1)  # C(n, k + 1), exact
            total += term
        return min(1.0, 2 * total / 2**n)  # int / int: correctly rounded even for huge n
    j = np.arange(k_max, 0, -1, dtype=np.float64)  # k, k − 1, …, 1
    below = np.cumprod(j / (n - j + 1))  # t_{k−1}/t_k, t_{k−2}/t_k, …, t_0/t_k
    log_top = math.lgamma(n + 1) - math.lgamma(k_max + 1) - math.lgamma(n - k_max + 1) - n * math.log(2)
    return min(1.0, 2.0 * math.exp(log_top + math.log1p(float(below.sum()))))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order: sort ascending, p̃_(i) =
    max_{j≤i} min(1, (m − j + 1)·p_(j)) over m comparisons; reject where p̃ < 0.05 (Holm 1979,
    Scand. J. Statist. 6:65). Test vector: (0.01, 0.04, 0.03) → (0.03, 0.06, 0.06). Raises
    ValueError for a p-value outside [0, 1] or NaN."""
    m = len(p_values)
    for p in p_values:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p-values lie in [0, 1], got {p}")
    adjusted = [0.0] * m
    running = 0.0
    for j, i in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - j) * p_values[i]))
        adjusted[i] = running
    return adjusted


def paired_bootstrap(right_a: np.ndarray, right_b: np.ndarray, *, sets: np.ndarray | None = None,
                     resamples: int = RESAMPLES, seed: int = SEED, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval (percentage points) of Δ = acc_A − acc_B by the paired bootstrap: each
    resample draws N images with replacement, the same images for both models, so Δ* = 100·(b* −
    c*)/N. With ``sets`` (one key per image: a corruption cell, a region) every set is resampled
    within itself at its own size, as PROTOCOLS asks for multi-set tasks.

    A resample's Δ* depends only on how many of its draws land on A-only-right (b) and
    B-only-right (c) images, and those counts are multinomial(N_s, (b_s, c_s, rest)/N_s) per set
    (drawn here as two binomials): drawing them directly is the index bootstrap in distribution,
    at O(R × sets) cost whatever N is (tests/unit/test_paired.py checks it against literal index
    resampling). Raises ValueError on misaligned
    vectors, an empty set of images, or ``sets`` of another length."""
    a, b = _bools(right_a, right_b)
    n = a.size
    if n == 0:
        raise ValueError("no images to compare")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level is a probability in (0, 1), got {level}")
    if sets is None:
        inverse = np.zeros(n, dtype=np.intp)
    else:
        sets = np.asarray(sets)
        if sets.shape != (n,):
            raise ValueError(f"sets has {sets.shape} keys for {n} images")
        inverse = np.unique(sets, return_inverse=True)[1].ravel()
    sizes = np.bincount(inverse)
    only_a = np.bincount(inverse, weights=a & ~b, minlength=sizes.size).astype(np.int64)
    only_b = np.bincount(inverse, weights=~a & b, minlength=sizes.size).astype(np.int64)
    live = (only_a + only_b) > 0  # a set without discordant images adds Δ = 0 to every resample
    sizes, only_a, only_b = sizes[live], only_a[live], only_b[live]
    rng = np.random.default_rng(seed)
    net = np.zeros(resamples, dtype=np.int64)
    step = max(1, SET_CHUNK // resamples)  # sets per draw, bounding the (R, sets) count arrays
    for first in range(0, sizes.size, step):
        chunk = slice(first, first + step)
        size, n_a, n_b = sizes[chunk], only_a[chunk], only_b[chunk]
        # multinomial(size, (n_a, n_b, rest)/size) as two binomials: draws on A-only images,
        # then draws on B-only images among the remaining draws
        draws_a = rng.binomial(size, n_a / size, size=(resamples, size.size))
        rest = size - n_a
        draws_b = rng.binomial(size - draws_a, np.divide(n_b, rest, out=np.zeros(n_b.shape), where=rest > 0))
        net += (draws_a - draws_b).sum(axis=1)
    deltas = 100.0 * net / n
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(deltas, [tail, 100.0 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class PairedTest:
    """A against B on the same ``n_images``: ``b`` (A right, B wrong), ``c`` (A wrong, B right),
    ``delta`` = 100·(b − c)/N (percentage points of top-1), its paired bootstrap ``ci``, and
    McNemar's exact ``p``."""

    n_images: int
    b: int
    c: int
    delta: float
    ci: tuple[float, float]
    p: float


def paired_test(right_a: np.ndarray, right_b: np.ndarray, *, sets: np.ndarray | None = None,
                resamples: int = RESAMPLES, seed: int = SEED) -> PairedTest:
    """Every statistic PROTOCOLS lists for one pair (see PairedTest). Raises ValueError as
    paired_bootstrap does."""
    b, c = discordant(right_a, right_b)
    n = int(np.asarray(right_a).size)
    ci = paired_bootstrap(right_a, right_b, sets=sets, resamples=resamples, seed=seed)
    return PairedTest(n_images=n, b=b, c=c, delta=100.0 * (b - c) / n, ci=ci, p=mcnemar_exact(b, c))


@dataclass(frozen=True)
class TieMark:
    """One row's place under the tie rule: ``shared_rank`` (the 1-based position, in the order
    given, of its group's leader), ``leader`` (that position's index in the input), ``group_size``,
    and, except for the leader itself, its test against the leader with the Holm-adjusted
    ``p_holm`` over that round's ``m`` comparisons."""

    shared_rank: int
    leader: int
    group_size: int
    test: PairedTest | None = None
    p_holm: float | None = None
    m: int = 0


def tie_groups(rights: Sequence[np.ndarray], *, sets: np.ndarray | None = None, alpha: float = ALPHA,
               resamples: int = RESAMPLES, seed: int = SEED) -> list[TieMark]:
    """The tie rule of PROTOCOLS over models given best first (``rights[i]``: model i's right
    vector, all aligned on the same images).

    1. The best remaining model leads; every other remaining model is tested against it
       (McNemar), and the K − 1 p-values are Holm-adjusted (m = K − 1, K = models remaining).
    2. The leader and every model with p̃ ≥ ``alpha`` form a group sharing the leader's position
       as their rank ("=1" for the first group).
    3. The group leaves; repeat on the rest. Ties are never chained: a model is only ever
       compared with a leader, not with another tied model.
    Returns one TieMark per input, in input order. Raises ValueError on misaligned vectors."""
    marks: list[TieMark | None] = [None] * len(rights)
    remaining = list(range(len(rights)))
    while remaining:
        leader, others = remaining[0], remaining[1:]
        counts = [discordant(rights[o], rights[leader]) for o in others]
        adjusted = holm([mcnemar_exact(b, c) for b, c in counts])
        tied = [o for o, p in zip(others, adjusted, strict=True) if p >= alpha]
        group = [leader, *tied]
        for o, p in zip(others, adjusted, strict=True):
            if p >= alpha:  # only the tied rows show their test, so only they pay for the bootstrap
                test = paired_test(rights[o], rights[leader], sets=sets, resamples=resamples, seed=seed)
                marks[o] = TieMark(leader + 1, leader, len(group), test, p, len(others))
        marks[leader] = TieMark(leader + 1, leader, len(group))
        remaining = [i for i in others if i not in tied]
    return [m for m in marks if m is not None]


SET_KEYS = ("corruption", "severity", "region")  # PROTOCOLS: multi-set tasks resample within each set
IMAGE_KEYS = ("part", "corruption", "severity", "region", "index")  # together name one image


@dataclass(frozen=True)
class Aligned:
    """Two models' outcomes on the same images in the same order: ``right_a``, ``right_b`` (top-1
    hits) and ``sets`` (an integer set code per image, None for a single-set task)."""

    right_a: np.ndarray
    right_b: np.ndarray
    sets: np.ndarray | None


def align(outcomes_a: dict[str, np.ndarray], outcomes_b: dict[str, np.ndarray]) -> Aligned:
    """Pair two per-image outcome files of one task (runner/metrics/per_image.py's arrays) image by
    image. A hit is ``pred == label`` (for any-of tasks the file's label is already the accepted
    class the model ranked highest). Only the primary part is scored where a file has parts
    (imagenet-r: "main"). Images are matched by their keys (``index`` within its part, corruption,
    severity, region) and returned in the order of those keys, so files listing them in different
    orders still pair, and every alignment with one file shares its order. Raises
    ValueError naming the difference when the two files do not hold the same images."""
    a, b = _scored(outcomes_a), _scored(outcomes_b)
    if set(a) != set(b):
        raise ValueError(f"the two files describe images differently ({sorted(a)} and {sorted(b)})")
    keys = [k for k in IMAGE_KEYS if k in a and k != "right"]
    if len(a["right"]) != len(b["right"]):
        raise ValueError(f"the two results scored different numbers of images ({len(a['right'])} and "
                         f"{len(b['right'])})")
    a, b = _sorted(a, keys), _sorted(b, keys)  # one canonical order, whatever each file's order
    if not all(np.array_equal(a[k], b[k]) for k in keys):
        raise ValueError("the two results scored different images (their image keys differ)")
    sets = None
    present = [k for k in SET_KEYS if k in a]
    if present:
        sets = np.zeros(len(a["right"]), dtype=np.int64)
        for k in present:
            codes = np.unique(a[k], return_inverse=True)[1].ravel()
            sets = sets * (int(codes.max()) + 1) + codes
    return Aligned(a["right"], b["right"], sets)


def _scored(outcomes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    try:
        keep = outcomes["part"] == "main" if "part" in outcomes else slice(None)
        columns = {k: np.asarray(outcomes[k])[keep] for k in IMAGE_KEYS if k in outcomes and k != "part"}
        columns["right"] = np.asarray(outcomes["pred"])[keep] == np.asarray(outcomes["label"])[keep]
    except KeyError as exc:
        raise ValueError(f"per-image outcomes lack the array {exc.args[0]!r}") from None
    if "index" not in columns:
        raise ValueError("per-image outcomes lack the array 'index'")
    return columns


def _sorted(columns: dict[str, np.ndarray], keys: list[str]) -> dict[str, np.ndarray]:
    order = np.lexsort([columns[k] for k in reversed(keys)])  # stable: equal keys keep file order
    return {k: v[order] for k, v in columns.items()}


def _bools(right_a: np.ndarray, right_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(right_a, dtype=bool).ravel(), np.asarray(right_b, dtype=bool).ravel()
    if a.shape != b.shape:
        raise ValueError(f"the two models were scored on different numbers of images ({a.size} and {b.size})")
    return a, b
