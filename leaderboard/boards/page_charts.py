"""Which charts each page shows: a board's (by its task) and a submission's (by its jobs). Each
function returns (name, figure) pairs; the figures are drawn by charts.py (pure functions to
Plotly specs) from numbers the selectors read."""
from __future__ import annotations

from typing import Any

from leaderboard.benchmarks.models import Task
from leaderboard.submissions.models import result_is_synthetic, result_loop_in_sandbox
from runner.catalogue import UnknownTask, catalogue_task

from . import algoperf, charts, selectors

# In-distribution task of each shifted task: x of the effective-robustness plot.
IN_DISTRIBUTION = {"cifar10-c": "cifar10", "cifar100-c": "cifar100", "imagenet-a": "imagenet-val",
                   "imagenet-r": "imagenet-val", "imagenet-c": "imagenet-val"}
GEOGRAPHIC = ("geode", "dollarstreet")
# shared/PROTOCOLS.md "Denoising": the Noise2Score paper's PSNR (known noise level) and BM3D σ=25.
PUBLISHED_PSNR = {
    "bsd68": {"gauss25": 29.12, "gauss50": 26.21, "poisson0.01": 30.81, "poisson0.05": 27.12, "gamma100": 32.67,
              "gamma50": 30.53},
    "set12": {"gauss25": 30.13, "gauss50": 27.16, "poisson0.01": 31.58, "poisson0.05": 27.86, "gamma100": 33.01,
              "gamma50": 30.87},
    "cbsd68": {"gauss25": 30.85, "gauss50": 27.75, "poisson0.01": 32.61, "poisson0.05": 28.68, "gamma100": 33.82,
               "gamma50": 31.05},
    "kodak": {"gauss25": 31.89, "poisson0.01": 33.41, "poisson0.05": 29.71, "gamma100": 34.22, "gamma50": 31.34},
}
PUBLISHED_BM3D_GAUSS25 = {"bsd68": 28.59, "set12": 29.96, "cbsd68": 30.56, "kodak": 31.68}


def _track(slug: str) -> str | None:
    """The catalogue's track for a task (which charts it has), None for a task it lacks."""
    try:
        return catalogue_task(slug).track
    except UnknownTask:
        return None


def _validation_labels(task: Task) -> tuple[str, str, str]:
    """(curve key, chart name, axis title) of a training task's validation curve."""
    key = algoperf.validation_key(task.primary_metric)
    if key == "test_top1":
        return key, "test-accuracy", "test top-1 %"
    return key, f"validation-{key.replace('_', '-')}", key


def published_references(task: Task) -> list[tuple[str, float]]:
    """Published figures for a denoising task, as (label, PSNR)."""
    if _track(task.slug) != "denoise":
        return []
    dataset, noise = task.params.get("set", ""), task.slug.rsplit("-", 1)[-1]
    refs = []
    if noise in PUBLISHED_PSNR.get(dataset, {}):
        refs.append(("Noise2Score (published)", PUBLISHED_PSNR[dataset][noise]))
    if noise == "gauss25" and dataset in PUBLISHED_BM3D_GAUSS25:
        refs.append(("BM3D (published)", PUBLISHED_BM3D_GAUSS25[dataset]))
    return refs


SYNTHETIC_NOTE = "synthetic data"
LOOP_IN_SANDBOX_NOTE = "loop in sandbox (GPU): not forgery-proof"


def with_notes(figures: list[tuple[str, Any]], *, synthetic: bool, loop_in_sandbox: bool,
               some: bool = False) -> list[tuple[str, Any]]:
    """``figures`` with their titles saying what the rows' labels say (synthetic data, a training
    loop that ran in the sandbox): ``" · synthetic data"`` and the like appended to each title;
    ``some``: only some of the results drawn carry the label ("includes …"). Titles are changed
    in place; the list is returned."""
    notes = [note for flag, note in ((synthetic, SYNTHETIC_NOTE), (loop_in_sandbox, LOOP_IN_SANDBOX_NOTE)) if flag]
    if notes:
        suffix = " · " + ("includes " if some else "") + ", ".join(notes)
        for _, figure in figures:
            title = figure["layout"]["title"]
            title["text"] = title["text"] + suffix
    return figures


def board_figures(*, task: Task, tasks: list[Task], records: list[dict], user=None,
                  times: selectors.BoardTimes | None = None) -> list[tuple[str, Any]]:
    """The charts of one task's board from its rows (``board_as_records``), each title noting when
    a charted row (the first 30) is labelled synthetic data or loop in sandbox. ``times``: a
    training board's time to its reference target (selectors.board_time_to_target), for the
    validation-against-samples chart and the time-to-target bars."""
    charted = records[:30]
    return with_notes(_board_figures(task=task, tasks=tasks, records=records, user=user, times=times),
                      synthetic=any(r.get("synthetic_data") for r in charted),
                      loop_in_sandbox=any(r.get("loop_in_sandbox") for r in charted), some=True)


def _board_figures(*, task: Task, tasks: list[Task], records: list[dict], user=None,
                   times: selectors.BoardTimes | None = None) -> list[tuple[str, Any]]:
    figures: list[tuple[str, Any]] = []
    if not records:
        return figures
    by_slug = {t.slug: t for t in tasks}
    figures.append(("ranking", charts.ranking_figure(
        task_title=task.title, metric=task.primary_metric, higher_is_better=task.higher_is_better,
        rows=records[:30], references=published_references(task))))
    top_ids = [r["submission_id"] for r in records[:10]]
    if _track(task.slug) == "synthetic":
        curves = selectors.board_curves(task=task, submission_ids=top_ids)
        runs = [{"name": r["name"], "trajectory": curves[r["submission_id"]]["trajectory"]}
                for r in records[:10] if "trajectory" in curves.get(r["submission_id"], {})]
        if runs:
            figures.append(("trajectory", charts.trajectory_figure(function=task.title, runs=runs)))
            figures.append(("loss", charts.loss_curve_figure(function=task.title, runs=runs)))
    if selectors.is_training_task(task):
        figures.extend(_training_figures(task=task, records=records, times=times))
    if _track(task.slug) == "denoise":
        figures.append(("denoising-settings", _denoising_settings(task=task, tasks=tasks, records=records[:8],
                                                                  user=user)))
    x_slug = IN_DISTRIBUTION.get(task.slug)
    if x_slug in by_slug:
        points = selectors.paired_points(x_task=by_slug[x_slug], y_task=task)
        if points:
            figures.append(("effective-robustness", charts.scatter_with_fit(
                title=f"{task.title} against {by_slug[x_slug].title} (line: fit over baselines)",
                x_title=f"{x_slug} top-1 %", y_title=f"{task.slug} {task.primary_metric}", points=points)))
    if task.slug in GEOGRAPHIC and "imagenet-val" in by_slug:
        for metric, label in ((task.primary_metric, "geographic top-1 %"), ("disparity", "disparity (best − worst region)")):
            points = selectors.paired_points(x_task=by_slug["imagenet-val"], y_task=task, y_metric=metric)
            if points:
                figures.append((f"progress-gap-{metric}", charts.scatter_with_fit(
                    title=f"Progress gap: ImageNet top-1 against {task.title} {metric}",
                    x_title="imagenet-val top-1 %", y_title=label, points=points, fit_on_baselines=False)))
    if task.benchmark.kind == "classifier":
        points = selectors.size_points(task=task)
        if len(points) >= 2:
            figures.append(("size", charts.scatter_with_fit(
                title=f"{task.title}: {task.primary_metric} against model size", x_title="parameters (millions)",
                y_title=task.primary_metric, points=points, fit_on_baselines=False)))
    return figures


def _training_figures(*, task: Task, records: list[dict], times: selectors.BoardTimes | None) -> list[tuple[str, Any]]:
    """A training board's curves (validation metric and training loss per epoch, seed bands) and,
    once its workload has a reference target, the validation metric against samples with the
    target line and each row's training seconds to reach it."""
    key, name, axis = _validation_labels(task)
    curves = selectors.board_curves(task=task, submission_ids=[r["submission_id"] for r in records[:6]])
    runs = [{"name": r["name"], "curves": curves.get(r["submission_id"], {})} for r in records[:6]]
    what = "test top-1 per epoch" if key == "test_top1" else key
    figures: list[tuple[str, Any]] = [
        (name, charts.seed_band_figure(title=f"{task.title}: {what} (band: seed range)", runs=runs, key=key,
                                       y_title=axis)),
        ("train-loss", charts.seed_band_figure(title=f"{task.title}: training loss", runs=runs, key="train_loss",
                                               y_title="loss")),
    ]
    if times is None or times.target is None:
        return figures
    target = times.target
    figures.append(("target-curve", charts.target_curve_figure(
        title=f"{task.title}: {key} against samples, with the target", runs=runs, key=key, target=target.value,
        target_label=f"target {target.rule} ({target.source})", y_title=axis)))
    bars = [{"name": r["name"], "time": times.times[r["submission_id"]]["seconds"], "is_baseline": r["is_baseline"]}
            for r in records[:30] if times.times.get(r["submission_id"], {}).get("seconds") is not None]
    if bars:
        figures.append(("time-to-target", charts.time_to_target_bars(
            title=f"{task.title}: seconds to target (median of seeds)", rows=bars,
            unit="training seconds")))
    return figures


def _denoising_settings(*, task: Task, tasks: list[Task], records: list[dict], user=None) -> Any:
    """The board's leading denoisers across every noise setting of the set."""
    values = selectors.values_across_tasks(tasks=tasks, submission_ids=[r["submission_id"] for r in records],
                                           user=user)
    settings = [t.slug.rsplit("-", 1)[-1] for t in tasks]
    runs = [{"name": r["name"], "is_baseline": r["is_baseline"],
             "values": [values.get(r["submission_id"], {}).get(t.pk) for t in tasks]} for r in records]
    published = [dict(published_references(t)).get("Noise2Score (published)") for t in tasks]
    return charts.denoising_settings_figure(
        title=f"{task.benchmark.title}: PSNR across noise settings (leaders of {task.slug.rsplit('-', 1)[-1]})",
        settings=settings, runs=runs, published=published)


def submission_figures(*, submission, jobs: list) -> list[tuple[str, Any]]:
    """Per-task breakdowns of one submission's results, each title noting when its job's result is
    labelled synthetic data or loop in sandbox (the PSNR-by-noise chart: when any of its jobs is)."""
    figures: list[tuple[str, Any]] = []
    denoise_points = []
    denoise_flags: list[list[bool]] = []
    for job in jobs:
        result = job.result or {}
        flags = [result_is_synthetic(result), result_loop_in_sandbox(result)]
        first_of_job = len(figures)
        breakdown, curves, slug = result.get("breakdown", {}), result.get("curves", {}), job.task.slug
        if "trajectory" in curves:
            figures.append((f"trajectory-{slug}", charts.trajectory_figure(
                function=job.task.title, runs=[{"name": submission.name, "trajectory": curves["trajectory"]}])))
        if selectors.is_training_workload(submission.benchmark.kind, slug) and curves:
            run = [{"name": submission.name, "curves": curves}]
            key, _, axis = _validation_labels(job.task)
            figures.append((f"accuracy-{slug}", charts.seed_band_figure(
                title=f"{job.task.title}: {'test top-1 per epoch' if key == 'test_top1' else key}", runs=run, key=key,
                y_title=axis)))
            figures.append((f"loss-{slug}", charts.seed_band_figure(
                title=f"{job.task.title}: training loss per epoch", runs=run, key="train_loss", y_title="loss")))
        if isinstance(breakdown.get("per_corruption"), dict) and breakdown["per_corruption"]:
            figures.append((f"corruptions-{slug}", charts.corruption_heatmap(
                title=job.task.title, per_corruption=breakdown["per_corruption"])))
        if slug in GEOGRAPHIC and isinstance(breakdown.get("per_region"), dict):
            figures.append((f"regions-{slug}", charts.region_bars(title=job.task.title,
                                                                  per_region=breakdown["per_region"])))
            figures.append((f"map-{slug}", charts.region_map(title=job.task.title,
                                                             per_region=breakdown["per_region"], dataset=slug)))
            if isinstance(breakdown.get("per_income"), dict):
                figures.append((f"income-{slug}", charts.income_bars(title=job.task.title,
                                                                     per_income=breakdown["per_income"])))
        if _track(slug) == "denoise" and "psnr" in result.get("metrics", {}):
            denoise_points.append((job.task, result["metrics"]["psnr"]))
            denoise_flags.append(flags)
        with_notes(figures[first_of_job:], synthetic=flags[0], loop_in_sandbox=flags[1])
    if denoise_points:
        figures.insert(0, ("psnr-by-noise", charts.psnr_by_noise_figure(
            title=f"{submission.name}: PSNR by noise setting",
            points=[(t.slug.rsplit("-", 1)[-1], v, dict(published_references(t)).get("Noise2Score (published)"))
                    for t, v in denoise_points])))
        synthetic, in_sandbox = ([f[i] for f in denoise_flags] for i in (0, 1))
        with_notes(figures[:1], synthetic=any(synthetic), loop_in_sandbox=any(in_sandbox),
                   some=any(synthetic) > all(synthetic) or any(in_sandbox) > all(in_sandbox))
    return figures
