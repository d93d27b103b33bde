"""Metrics of the classifier tracks (shared/PROTOCOLS.md) as pure numpy functions, and one
builder per task slug that turns predictions and targets into a ``spec.make_result`` document.

Predictions are kept small: ``compact`` turns each batch of logits into the top-5 class indices
in the task's label space (for ImageNet-A/R: the argsort of the 200 subset logits, so indices are
0–199). Every builder also accepts full logits. Accuracies are percentages (0–100).

Intervals are percentile bootstraps (seeded). A resample of n right/wrong outcomes has
Binomial(n, p̂) successes, so each stratum is resampled exactly with one binomial draw per
replicate; strata are the corruption × severity sets for -C tasks, the regions for GeoDE, and
the region × income-quartile cells for Dollar Street.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from runner import data_files
from runner.catalogue import catalogue_task
from runner.spec import ErrorKind, EvaluationError, make_result

TOPK = 5
BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 0
# Dollar Street monthly income (USD) boundaries of the quartiles: the 25/50/75% quantiles over the
# reference study's train + test split (shared/data/dollarstreet.json). q1 is the poorest quartile,
# q4 the richest, so the income gap q4 − q1 is richest minus poorest.
INCOME_BOUNDARIES = (195.0, 685.0, 1963.0)
INCOME_QUARTILES = ("q1", "q2", "q3", "q4")
ALEXNET_CLEAN_ERROR = float(data_files.load("imagenet_c")["alexnet_clean_err"])  # 0.4348


# --------------------------------------------------------------------------------------------
# Outputs → predictions.
# --------------------------------------------------------------------------------------------
def task_classes(slug: str) -> int:
    """Width of the model's output for a classifier task (the catalogue's ``num_classes``).
    Raises UnknownTask (a LookupError) for a task the catalogue lacks."""
    classes = catalogue_task(slug).num_classes
    if classes is None:
        raise ValueError(f"{slug} is not a task with classes")
    return classes


def task_subset(slug: str) -> tuple[int, ...] | None:
    """The 1k logit columns kept before ranking (ImageNet-A/R), else None."""
    if slug == "imagenet-a":
        return data_files.subset_indices("imagenet_a")
    if slug == "imagenet-r":
        return data_files.subset_indices("imagenet_r")
    return None


def topk_indices(logits: np.ndarray, k: int = TOPK, subset: Sequence[int] | None = None) -> np.ndarray:
    """int32 [N, min(k, C)]: classes by descending logit, ties to the lower index. With
    ``subset`` only those columns are ranked and indices are positions within the subset."""
    scores = np.asarray(logits)
    if subset is not None:
        scores = scores[:, np.asarray(subset)]
    order = np.argsort(-scores, axis=1, kind="stable")[:, : min(k, scores.shape[1])]
    return order.astype(np.int32)


def compact(slug: str, outputs: Any, n_items: int | None = None, *, k: int = TOPK) -> np.ndarray:
    """Check a batch of model outputs and reduce it to top-k indices in the task's label space.

    Raises EvaluationError WRONG_OUTPUT for a shape other than [n_items, classes] and NOT_FINITE
    for NaN or infinity (the model's fault, reported to its author).
    """
    if hasattr(outputs, "detach"):  # a torch tensor, possibly on the GPU
        outputs = outputs.detach().float().cpu().numpy()
    logits = np.asarray(outputs)
    classes = task_classes(slug)
    if logits.ndim != 2 or logits.shape[1] != classes or (n_items is not None and logits.shape[0] != n_items):
        expected = f"[{n_items if n_items is not None else 'N'}, {classes}]"
        raise EvaluationError(
            ErrorKind.WRONG_OUTPUT,
            f"the model returned shape {list(logits.shape)}; {slug} needs logits of shape {expected}",
        )
    if not np.issubdtype(logits.dtype, np.floating):
        raise EvaluationError(
            ErrorKind.WRONG_OUTPUT, f"the model returned {logits.dtype}; logits must be floats"
        )
    if not np.isfinite(logits).all():
        bad = int((~np.isfinite(logits)).any(axis=1).sum())
        raise EvaluationError(
            ErrorKind.NOT_FINITE, f"the model returned NaN or infinite logits for {bad} images"
        )
    return topk_indices(logits, k, task_subset(slug))


def as_topk(predictions: Any, *, subset: Sequence[int] | None = None, k: int = TOPK) -> np.ndarray:
    """Top-k indices from either logits (floats, ranked here) or top-k indices (integers, as is)."""
    array = np.asarray(predictions)
    if array.ndim == 1:
        array = array[:, None]
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64)
    return topk_indices(array, k, subset).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Hits and accuracies.
# --------------------------------------------------------------------------------------------
def hits(topk: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """bool [N]: the label is among the first k predictions."""
    return (np.asarray(topk)[:, :k] == np.asarray(labels)[:, None]).any(axis=1)


def padded(accepted: Sequence[Sequence[int]]) -> np.ndarray:
    """Accepted index lists → an int matrix padded with -1 (never a class)."""
    width = max((len(a) for a in accepted), default=1)
    out = np.full((len(accepted), max(width, 1)), -1, dtype=np.int64)
    for i, choices in enumerate(accepted):
        out[i, : len(choices)] = choices
    return out


def hits_any(topk: np.ndarray, accepted: Sequence[Sequence[int]] | np.ndarray, k: int) -> np.ndarray:
    """bool [N]: any of the first k predictions is one of the item's accepted indices."""
    table = accepted if isinstance(accepted, np.ndarray) and accepted.ndim == 2 else padded(accepted)
    return (np.asarray(topk)[:, :k, None] == table[:, None, :]).any(axis=(1, 2))


def percent(correct: np.ndarray) -> float:
    correct = np.asarray(correct)
    return float(100.0 * correct.mean()) if correct.size else float("nan")


# --------------------------------------------------------------------------------------------
# Bootstrap.
# --------------------------------------------------------------------------------------------
def resampled_successes(
    successes: np.ndarray, totals: np.ndarray, *, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """int [n_boot, S]: successes of each stratum in each bootstrap replicate (exact: binomial)."""
    successes = np.asarray(successes, dtype=np.int64)
    totals = np.asarray(totals, dtype=np.int64)
    p = np.divide(successes, totals, out=np.zeros(len(totals)), where=totals > 0)
    return rng.binomial(totals[None, :], p[None, :], size=(n_boot, len(totals)))


def interval(samples: np.ndarray) -> list[float]:
    """Percentile 95% interval of bootstrap replicates (already in the metric's units)."""
    low, high = np.percentile(np.asarray(samples, dtype=np.float64), [2.5, 97.5])
    return [float(low), float(high)]


def factorize(values: Sequence[Any] | np.ndarray) -> tuple[np.ndarray, list[Any]]:
    """(codes, uniques in order of first appearance)."""
    index: dict[Any, int] = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int64, count=len(values))
    return codes, list(index)


def accuracy_ci(
    correct: np.ndarray,
    *,
    strata: Sequence[Any] | np.ndarray | None = None,
    n_boot: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> list[float]:
    """95% interval of the accuracy (%) of ``correct``, resampled within each stratum if given."""
    correct = np.asarray(correct, dtype=bool)
    codes = np.zeros(len(correct), dtype=np.int64) if strata is None else factorize(strata)[0]
    totals = np.bincount(codes, minlength=codes.max(initial=0) + 1)
    wins = np.bincount(codes, weights=correct, minlength=len(totals)).astype(np.int64)
    draws = resampled_successes(wins, totals, n_boot=n_boot, rng=np.random.default_rng(seed))
    return interval(100.0 * draws.sum(axis=1) / max(len(correct), 1))


def summary(topk: np.ndarray, labels: np.ndarray, *, n_boot: int, seed: int) -> tuple[dict, dict]:
    """top1/top5 and their intervals for single-label predictions."""
    top1, top5 = hits(topk, labels, 1), hits(topk, labels, TOPK)
    metrics = {"top1": percent(top1), "top5": percent(top5)}
    ci = {
        "top1": accuracy_ci(top1, n_boot=n_boot, seed=seed),
        "top5": accuracy_ci(top5, n_boot=n_boot, seed=seed + 1),
    }
    return metrics, ci


# --------------------------------------------------------------------------------------------
# Corruptions (CIFAR-10-C, CIFAR-100-C, ImageNet-C).
# --------------------------------------------------------------------------------------------
def corruption_sets(
    correct: np.ndarray, corruptions: np.ndarray, severities: np.ndarray
) -> dict[tuple[str, int], tuple[int, int]]:
    """{(corruption, severity): (right, total)} in order of appearance."""
    correct = np.asarray(correct, dtype=bool)
    names_code, names = factorize(corruptions)
    combined = names_code * 16 + np.asarray(severities, dtype=np.int64)  # severities are 1–5
    keys, first, codes = np.unique(combined, return_index=True, return_inverse=True)
    totals = np.bincount(codes, minlength=len(keys))
    wins = np.bincount(codes, weights=correct, minlength=len(keys)).astype(np.int64)
    return {
        (str(names[keys[i] // 16]), int(keys[i] % 16)): (int(wins[i]), int(totals[i]))
        for i in np.argsort(first)
    }


def per_corruption(
    sets: dict[tuple[str, int], tuple[int, int]], names: Sequence[str]
) -> dict[str, dict[str, float]]:
    """breakdown ``per_corruption[name][severity]`` = top-1 (%), for the corruptions in ``names``."""
    table: dict[str, dict[str, float]] = {}
    for (name, severity), (right, total) in sets.items():
        if name in names and total:
            table.setdefault(name, {})[str(severity)] = 100.0 * right / total
    return {name: dict(sorted(table[name].items())) for name in names if name in table}


def alexnet_errors() -> dict[str, np.ndarray]:
    return {
        c: np.asarray(v, dtype=np.float64) for c, v in data_files.load("imagenet_c")["alexnet_err"].items()
    }


def corruption_error(errors: np.ndarray, alexnet: np.ndarray) -> np.ndarray:
    """CE_c = Σ_s E(s, c) / Σ_s E_AlexNet(s, c); ``errors`` [..., 5] fractions; returns %."""
    return 100.0 * np.asarray(errors).sum(axis=-1) / alexnet.sum()


def relative_corruption_error(
    errors: np.ndarray, clean_error: float, alexnet: np.ndarray, alexnet_clean: float = ALEXNET_CLEAN_ERROR
) -> np.ndarray:
    """Relative CE_c = Σ_s (E(s, c) − E_clean) / Σ_s (E_AlexNet(s, c) − E_AlexNet_clean); returns %."""
    return 100.0 * (np.asarray(errors) - clean_error).sum(axis=-1) / (alexnet - alexnet_clean).sum()


def _corruption_result(
    slug: str,
    predictions: Any,
    labels: np.ndarray,
    corruptions: np.ndarray,
    severities: np.ndarray,
    *,
    clean_top1: float | None,
    n_boot: int,
    seed: int,
) -> tuple[dict, dict, dict, dict]:
    """Metrics, intervals, breakdown and env notes of a -C task (the AlexNet terms for imagenet-c)."""
    standard = tuple(data_files.load("imagenet_c")["corruptions"])
    extras = tuple(data_files.load("imagenet_c")["extra_corruptions"])
    topk = as_topk(predictions, k=1)
    sets = corruption_sets(hits(topk, labels, 1), corruptions, severities)
    scored = [key for key in sets if key[0] in standard and sets[key][1]]
    if not scored:
        raise EvaluationError(ErrorKind.DATASET_MISSING, f"{slug}: no image of the 15 corruptions was scored")
    right = np.array([sets[k][0] for k in scored])
    total = np.array([sets[k][1] for k in scored])
    accuracy = right / total
    draws = resampled_successes(right, total, n_boot=n_boot, rng=np.random.default_rng(seed)) / total
    top1 = 100.0 * accuracy.mean()
    top1_draws = 100.0 * draws.mean(axis=1)
    metrics = {"top1": float(top1), "corruption_error": float(100.0 - top1)}
    ci = {"top1": interval(top1_draws), "corruption_error": interval(100.0 - top1_draws)}
    breakdown: dict[str, Any] = {"per_corruption": per_corruption(sets, standard)}
    extra_table = per_corruption(sets, extras)
    if extra_table:
        breakdown["extra_corruptions"] = extra_table
    notes: dict[str, Any] = {
        "top1": f"mean top-1 over {len(scored)} of the 75 corruption × severity sets (15 corruptions; "
        "the 4 extras are reported apart and never enter top1, corruption_error or mce)",
    }
    if slug == "imagenet-c":
        alexnet = alexnet_errors()
        complete = [c for c in standard if all((c, s) in sets and sets[(c, s)][1] for s in range(1, 6))]
        if not complete:
            raise EvaluationError(ErrorKind.DATASET_MISSING, "imagenet-c: no corruption has all 5 severities")
        columns = np.array([[scored.index((c, s)) for s in range(1, 6)] for c in complete])
        errors, error_draws = 1.0 - accuracy[columns], 1.0 - draws[:, columns]  # [C, 5], [B, C, 5]
        ce = np.array([corruption_error(errors[i], alexnet[c]) for i, c in enumerate(complete)])
        ce_draws = np.stack(
            [corruption_error(error_draws[:, i], alexnet[c]) for i, c in enumerate(complete)], axis=1
        )
        metrics["mce"] = float(ce.mean())
        ci["mce"] = interval(ce_draws.mean(axis=1))
        breakdown["ce"] = {c: float(v) for c, v in zip(complete, ce, strict=True)}
        notes["mce"] = (
            f"AlexNet-normalized mean CE over {len(complete)} of 15 corruptions "
            f"(Σ_s E / Σ_s E_AlexNet, AlexNet errors from hendrycks/robustness)"
        )
        if clean_top1 is not None:
            clean = 1.0 - clean_top1 / 100.0
            rel = np.array(
                [relative_corruption_error(errors[i], clean, alexnet[c]) for i, c in enumerate(complete)]
            )
            rel_draws = np.stack(
                [
                    relative_corruption_error(error_draws[:, i], clean, alexnet[c])
                    for i, c in enumerate(complete)
                ],
                axis=1,
            )
            metrics["relative_mce"] = float(rel.mean())
            ci["relative_mce"] = interval(rel_draws.mean(axis=1))
            breakdown["relative_ce"] = {c: float(v) for c, v in zip(complete, rel, strict=True)}
            notes["relative_mce"] = (
                f"clean error {clean:.4f} from the submission's imagenet-val top1, held "
                f"fixed; AlexNet clean error {ALEXNET_CLEAN_ERROR}"
            )
    return metrics, ci, breakdown, notes


# --------------------------------------------------------------------------------------------
# Geographic sets (GeoDE, Dollar Street).
# --------------------------------------------------------------------------------------------
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


def _geo_result(
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


# --------------------------------------------------------------------------------------------
# One builder per task slug.
# --------------------------------------------------------------------------------------------
def _env(
    notes: dict[str, Any], env: dict[str, Any] | None, n_boot: int, seed: int, strata: str
) -> dict[str, Any]:
    return {
        **(env or {}),
        "metric_notes": notes,
        "bootstrap": {"samples": n_boot, "seed": seed, "method": "percentile", "resampled_within": strata},
    }


def result_classification(
    slug: str,
    predictions: Any,
    labels: np.ndarray,
    *,
    env: dict[str, Any] | None = None,
    timing: dict[str, float] | None = None,
    n_boot: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """digits, cifar10, cifar100, imagenet-val: top-1 and top-5 over the full output."""
    metrics, ci = summary(as_topk(predictions), np.asarray(labels), n_boot=n_boot, seed=seed)
    notes = {
        "top1": "argmax of the logits equals the label",
        "top5": "the label is among the 5 highest logits",
    }
    return make_result(
        slug, metrics, ci95=ci, env=_env(notes, env, n_boot, seed, "the whole set"), timing=timing
    )


def result_imagenet_a(
    predictions: Any,
    labels: np.ndarray,
    *,
    env: dict[str, Any] | None = None,
    timing: dict[str, float] | None = None,
    n_boot: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """ImageNet-A: argmax (and top-5) over the 200 subset logits; labels are positions 0–199."""
    topk = as_topk(predictions, subset=task_subset("imagenet-a"))
    metrics, ci = summary(topk, np.asarray(labels), n_boot=n_boot, seed=seed)
    notes = {"top1": "argmax over the 200 ImageNet-A logits", "top5": "top-5 within the 200 classes"}
    return make_result(
        "imagenet-a", metrics, ci95=ci, env=_env(notes, env, n_boot, seed, "the whole set"), timing=timing
    )


def result_imagenet_r(
    predictions: Any,
    labels: np.ndarray,
    imagenet200_predictions: Any,
    imagenet200_labels: np.ndarray,
    *,
    env: dict[str, Any] | None = None,
    timing: dict[str, float] | None = None,
    n_boot: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """ImageNet-R, and ImageNet-200 (val images of the same 200 classes, the same masking)."""
    subset = task_subset("imagenet-r")
    topk = as_topk(predictions, subset=subset)
    metrics, ci = summary(topk, np.asarray(labels), n_boot=n_boot, seed=seed)
    clean = hits(as_topk(imagenet200_predictions, subset=subset), np.asarray(imagenet200_labels), 1)
    rendition = hits(topk, np.asarray(labels), 1)
    metrics["imagenet200_top1"] = percent(clean)
    metrics["imagenet200_gap"] = metrics["imagenet200_top1"] - metrics["top1"]
    rng = np.random.default_rng(seed + 2)
    clean_draws = resampled_successes([clean.sum()], [len(clean)], n_boot=n_boot, rng=rng)[:, 0] / len(clean)
    r_draws = resampled_successes([rendition.sum()], [len(rendition)], n_boot=n_boot, rng=rng)[:, 0] / len(
        rendition
    )
    ci["imagenet200_top1"] = interval(100.0 * clean_draws)
    ci["imagenet200_gap"] = interval(100.0 * (clean_draws - r_draws))
    notes = {
        "top1": "argmax over the 200 ImageNet-R logits",
        "top5": "top-5 within the 200 classes",
        "imagenet200_top1": "val images of ImageNet-R's 200 classes, the same 200-logit masking",
        "imagenet200_gap": "imagenet200_top1 − top1",
    }
    return make_result(
        "imagenet-r",
        metrics,
        ci95=ci,
        env=_env(notes, env, n_boot, seed, "each of the two sets"),
        timing=timing,
    )


def result_corruptions(
    slug: str,
    predictions: Any,
    labels: np.ndarray,
    corruptions: np.ndarray,
    severities: np.ndarray,
    *,
    clean_top1: float | None = None,
    env: dict[str, Any] | None = None,
    timing: dict[str, float] | None = None,
    n_boot: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """cifar10-c, cifar100-c, imagenet-c. ``clean_top1`` (the submission's imagenet-val top1, %)
    adds relative_mce to imagenet-c."""
    metrics, ci, breakdown, notes = _corruption_result(
        slug,
        predictions,
        np.asarray(labels),
        corruptions,
        severities,
        clean_top1=clean_top1,
        n_boot=n_boot,
        seed=seed,
    )
    return make_result(
        slug,
        metrics,
        ci95=ci,
        breakdown=breakdown,
        env=_env(notes, env, n_boot, seed, "each corruption × severity set"),
        timing=timing,
    )


def result_geode(
    predictions: Any,
    accepted: Sequence[Sequence[int]],
    regions: np.ndarray,
    *,
    objects: Sequence[Sequence[str]] | None = None,
    env: dict[str, Any] | None = None,
    timing: dict[str, float] | None = None,
    n_boot: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    metrics, ci, breakdown, notes = _geo_result(
        "geode", predictions, accepted, regions, objects=objects, incomes=None, n_boot=n_boot, seed=seed
    )
    return make_result(
        "geode",
        metrics,
        ci95=ci,
        breakdown=breakdown,
        env=_env(notes, env, n_boot, seed, "each region"),
        timing=timing,
    )


def result_dollarstreet(
    predictions: Any,
    accepted: Sequence[Sequence[int]],
    regions: np.ndarray,
    incomes: np.ndarray,
    *,
    topics: Sequence[Sequence[str]] | None = None,
    env: dict[str, Any] | None = None,
    timing: dict[str, float] | None = None,
    n_boot: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    metrics, ci, breakdown, notes = _geo_result(
        "dollarstreet",
        predictions,
        accepted,
        regions,
        objects=topics,
        incomes=incomes,
        n_boot=n_boot,
        seed=seed,
    )
    return make_result(
        "dollarstreet",
        metrics,
        ci95=ci,
        breakdown=breakdown,
        env=_env(notes, env, n_boot, seed, "each region × income-quartile cell"),
        timing=timing,
    )


def score(
    slug: str,
    predictions: dict[str, Any] | Any,
    data: Any,
    *,
    env: dict[str, Any] | None = None,
    timing: dict[str, float] | None = None,
    clean_top1: float | None = None,
    n_boot: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """The result document of classifier task ``slug``.

    ``predictions``: per part of ``data`` (a runner.datasets.TaskData), the outputs of all its
    items in reader order, as logits or as ``compact`` top-k indices; a bare array means
    ``{"main": array}``. ``env`` (runner, device, sandbox, ...) is merged over the dataset's env.
    """
    parts = predictions if isinstance(predictions, dict) else {"main": predictions}
    main, targets = parts["main"], data.main.targets
    if len(np.asarray(main)) != data.main.size:
        raise EvaluationError(
            ErrorKind.RUNNER_ERROR, f"{slug}: {len(np.asarray(main))} predictions for {data.main.size} images"
        )
    merged = {**data.env, **(env or {})}
    options = {"env": merged, "timing": timing, "n_boot": n_boot, "seed": seed}
    if slug in ("digits", "cifar10", "cifar100", "imagenet-val"):
        return result_classification(slug, main, targets.labels, **options)
    if slug == "imagenet-a":
        return result_imagenet_a(main, targets.labels, **options)
    if slug == "imagenet-r":
        return result_imagenet_r(
            main, targets.labels, parts["imagenet200"], data.parts["imagenet200"].targets.labels, **options
        )
    if slug in ("cifar10-c", "cifar100-c", "imagenet-c"):
        return result_corruptions(
            slug,
            main,
            targets.labels,
            targets.corruption,
            targets.severity,
            clean_top1=clean_top1 if slug == "imagenet-c" else None,
            **options,
        )
    if slug == "geode":
        return result_geode(main, targets.accepted, targets.region, objects=targets.objects, **options)
    if slug == "dollarstreet":
        return result_dollarstreet(
            main, targets.accepted, targets.region, targets.income, topics=targets.objects, **options
        )
    raise KeyError(f"{slug!r} is not a classifier task")
