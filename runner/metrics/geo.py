"""Geographic-shift sets (GeoDE, Dollar Street): accuracy over each item's accepted
ImageNet classes, per region, worst region, disparity, the Europe − Africa gap and, for Dollar
Street, per income quartile and the income gap (richest − poorest quartile).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from runner.metrics.classification import TOPK, as_topk, hits_any, padded, percent
from runner.metrics.intervals import factorize, interval, resampled_successes
from runner.spec import ErrorKind, EvaluationError

# Dollar Street monthly income (USD) boundaries of the quartiles: the 25/50/75% quantiles over the
# reference study's train + test split (shared/data/dollarstreet.json). q1 is the poorest quartile,
# q4 the richest, so the income gap q4 − q1 is richest minus poorest.
INCOME_BOUNDARIES = (195.0, 685.0, 1963.0)
INCOME_QUARTILES = ("q1", "q2", "q3", "q4")


def income_quartile(incomes: np.ndarray) -> np.ndarray:
    """ "q1" (poorest, ≤ 195 USD/month) … "q4" (richest, > 1963) per item."""
    bins = np.searchsorted(np.asarray(INCOME_BOUNDARIES), np.asarray(incomes, dtype=np.float64), side="left")
    return np.asarray(INCOME_QUARTILES, dtype=object)[bins]


def find_region(regions: Sequence[str], wanted: str) -> str | None:
    """The region spelled as in the metadata whose name is ``wanted`` (any case), else one that
    contains it ("The Americas" for "americas")."""
    lowered = {r.lower(): r for r in regions}
    if wanted in lowered:
        return lowered[wanted]
    return next((r for r in regions if wanted in r.lower()), None)


def geo_metrics(
    slug: str,
    predictions: Any,
    accepted: Sequence[Sequence[int]],
    regions: np.ndarray,
    *,
    objects: Sequence[Sequence[str]] | None,
    incomes: np.ndarray | None,
    n_boot: int,
    seed: int,
) -> tuple[dict, dict, dict, dict]:
    """Metrics, intervals, breakdown and env notes of a geographic set: ``predictions`` [N, C]
    logits or [N, k] top-k indices, ``accepted`` the class indices each item counts as right,
    ``regions`` [N], and for Dollar Street ``incomes`` [N] (USD/month), resampled within each
    region × income-quartile cell. Raises EvaluationError DATASET_MISSING when a gap lacks one
    of its two sides."""
    topk = as_topk(predictions)
    table = padded(accepted)
    right = {1: hits_any(topk, table, 1), 5: hits_any(topk, table, TOPK)}
    region_codes, region_names = factorize(list(regions))
    order = sorted(range(len(region_names)), key=lambda i: str(region_names[i]))
    if incomes is not None:
        quartiles = income_quartile(incomes)
        cell_codes, cells = factorize(list(zip(list(regions), list(quartiles), strict=True)))
    else:
        cell_codes, cells = region_codes, [(r, None) for r in region_names]
    cell_totals = np.bincount(cell_codes, minlength=len(cells))
    rng = np.random.default_rng(seed)
    draws = {}
    for k in (1, 5):
        wins = np.bincount(cell_codes, weights=right[k], minlength=len(cells)).astype(np.int64)
        draws[k] = resampled_successes(wins, cell_totals, n_boot=n_boot, rng=rng)  # [B, cells]

    def grouped(member_of: list[Any], names: list[Any]) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """(images per group, replicate accuracies [B, groups] for k = 1 and 5) from the cells."""
        matrix = np.zeros((len(cells), len(names)))
        for c, group in enumerate(member_of):
            matrix[c, names.index(group)] = 1.0
        totals = cell_totals @ matrix
        replicates = {}
        for k in (1, 5):
            summed = 100.0 * (draws[k] @ matrix)
            replicates[k] = np.divide(summed, totals, out=np.full_like(summed, np.nan), where=totals > 0)
        return totals, replicates

    _, region_draws = grouped([r for r, _ in cells], region_names)
    per_region = {}
    accuracy = {}
    for i in order:
        name = region_names[i]
        members = region_codes == i
        accuracy[name] = percent(right[1][members])
        per_region[str(name)] = {
            "top1": accuracy[name],
            "top5": percent(right[5][members]),
            "n": int(members.sum()),
            "ci95": {"top1": interval(region_draws[1][:, i]), "top5": interval(region_draws[5][:, i])},
        }
    names_sorted = [region_names[i] for i in order]
    best = max(names_sorted, key=lambda r: accuracy[r])
    worst = min(names_sorted, key=lambda r: accuracy[r])
    europe, africa = find_region(names_sorted, "europe"), find_region(names_sorted, "africa")
    if europe is None or africa is None:
        raise EvaluationError(
            ErrorKind.DATASET_MISSING,
            f"{slug}: the Europe − Africa gap needs images of both "
            f"regions; found {', '.join(map(str, names_sorted))}",
        )
    n_total = len(regions)
    metrics = {
        "top1": percent(right[1]),
        "top5": percent(right[5]),
        "worst_region_top1": accuracy[worst],
        "disparity": accuracy[best] - accuracy[worst],
        "gap_europe_africa": accuracy[europe] - accuracy[africa],
    }
    e, a = region_names.index(europe), region_names.index(africa)
    ci = {
        "top1": interval(100.0 * draws[1].sum(axis=1) / n_total),
        "top5": interval(100.0 * draws[5].sum(axis=1) / n_total),
        "worst_region_top1": interval(region_draws[1].min(axis=1)),
        "disparity": interval(region_draws[1].max(axis=1) - region_draws[1].min(axis=1)),
        "gap_europe_africa": interval(region_draws[1][:, e] - region_draws[1][:, a]),
    }
    breakdown: dict[str, Any] = {"per_region": per_region}
    notes = {
        "disparity": f"best − worst region top-1 (now {best} − {worst})",
        "gap_europe_africa": f"top-1 of {europe!r} − top-1 of {africa!r}",
        "overall": "top1/top5 are means over images, not over regions; a hit is any accepted 1k index in "
        "the top k of the full 1,000-way output",
    }
    if incomes is not None:
        q_names = list(INCOME_QUARTILES)
        q_totals, q_draws = grouped([q for _, q in cells], q_names)
        if not (q_totals[0] and q_totals[-1]):
            raise EvaluationError(
                ErrorKind.DATASET_MISSING,
                f"{slug}: the income gap needs images of the poorest and the richest quartile",
            )
        per_income = {}
        bounds = ["≤ 195", "195–685", "685–1963", "> 1963"]
        for j, q in enumerate(q_names):
            members = quartiles == q
            if members.any():
                per_income[q] = {
                    "top1": percent(right[1][members]),
                    "top5": percent(right[5][members]),
                    "n": int(members.sum()),
                    "income_usd_month": bounds[j],
                    "ci95": {"top1": interval(q_draws[1][:, j]), "top5": interval(q_draws[5][:, j])},
                }
        metrics["income_gap"] = per_income["q4"]["top1"] - per_income["q1"]["top1"]
        ci["income_gap"] = interval(q_draws[1][:, 3] - q_draws[1][:, 0])
        breakdown["per_income"] = per_income
        notes["income_gap"] = (
            "q4 − q1 = richest − poorest quartile top-1; quartile boundaries 195/685/1963 USD "
            "per month from the reference study, which names the quartiles the other way "
            "round (its Q1 is the richest)"
        )
    if objects is not None:
        breakdown["per_object"] = per_object(objects, right[1], right[5])
    return metrics, ci, breakdown, notes


def per_object(
    objects: Sequence[Sequence[str]], top1: np.ndarray, top5: np.ndarray
) -> dict[str, dict[str, Any]]:
    """{object: {top1, top5, n}}; an item with several objects (Dollar Street topics) counts for each."""
    sums: dict[str, list[int]] = {}
    for names, one, five in zip(objects, top1, top5, strict=True):
        for name in names:
            entry = sums.setdefault(str(name), [0, 0, 0])
            entry[0] += int(one)
            entry[1] += int(five)
            entry[2] += 1
    return {
        name: {"top1": 100.0 * a / n, "top5": 100.0 * b / n, "n": n}
        for name, (a, b, n) in sorted(sums.items())
    }
