"""One result-document builder per classifier task, and :func:`score`, which picks the builder
for a task and turns its predictions and targets into a ``spec.make_result`` document
(shared/PROTOCOLS.md "Result keys"). Accuracies are percentages (0–100); intervals are the
seeded percentile bootstraps of runner.metrics.intervals, and each document's env says how they
were drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from runner.metrics.classification import as_topk, hits, percent, summary, task_subset
from runner.metrics.corruptions import corruption_metrics
from runner.metrics.geo import geo_metrics
from runner.metrics.intervals import BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED, interval, resampled_successes
from runner.spec import ErrorKind, EvaluationError, make_result


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
    metrics, ci, breakdown, notes = corruption_metrics(
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
    metrics, ci, breakdown, notes = geo_metrics(
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
    metrics, ci, breakdown, notes = geo_metrics(
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
