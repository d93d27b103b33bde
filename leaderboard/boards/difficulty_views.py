"""Pages of issue 17 items 3, 4 and 5: a classifier task's hardest images and data-diet view, a
submission's failure explorer, and the explorer's thumbnails and saliency overlays
(leaderboard/boards/difficulty.py computes what they show, saliency_overlays.py reads the maps)."""
from __future__ import annotations

import logging
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from leaderboard.benchmarks.models import Task
from leaderboard.submissions.models import EvaluationJob, result_is_synthetic
from leaderboard.submissions.per_image import PerImageError
from leaderboard.submissions.views import visible_submission
from runner.per_image_file import read_thumbnails

from . import difficulty, saliency_overlays
from .charts import PALETTE, Figure, _figure

log = logging.getLogger(__name__)
GROUP_TITLES = {"region": "region", "income_group": "income group", "corruption": "corruption", "label": "class",
                "severity": "severity"}


def _classifier_task(benchmark_slug: str, task_slug: str) -> Task:
    return get_object_or_404(Task.objects.select_related("benchmark"), benchmark__slug=benchmark_slug,
                             slug=task_slug, benchmark__kind="classifier")


def group_figure(*, key: str, stats: list[dict[str, Any]]) -> Figure:
    """Box plots (quartiles, min and max) of image difficulty per value of ``key``."""
    names = [str(s.get("name", s["value"])) for s in stats]
    box = {"type": "box", "name": "difficulty", "x": names, "q1": [s["q1"] for s in stats],
           "median": [s["median"] for s in stats], "q3": [s["q3"] for s in stats],
           "lowerfence": [s["min"] for s in stats], "upperfence": [s["max"] for s in stats],
           "mean": [s["mean"] for s in stats], "marker": {"color": PALETTE[0]}}
    return _figure([box], f"Difficulty (mean EL2N over models) by {GROUP_TITLES[key]}",
                   xaxis={"title": {"text": GROUP_TITLES[key]}, "type": "category"},
                   yaxis={"title": {"text": "mean EL2N"}, "range": [0, 1.45]}, showlegend=False)


def diet_figure(*, members: list, diet: list[dict[str, Any]]) -> Figure:
    """A bump chart: each submission's rank (1 at the top) as the easiest X% of images are dropped."""
    lines = []
    for m, (_, name, _) in enumerate(members):
        lines.append({"type": "scatter", "mode": "lines+markers", "name": name,
                      "x": [d["percent"] for d in diet], "y": [d["rank"][m] for d in diet],
                      "customdata": [round(d["top1"][m], 2) for d in diet],
                      "line": {"color": PALETTE[m % len(PALETTE)]},
                      "hovertemplate": f"{name}: rank %{{y}}, top-1 %{{customdata}}% at X = %{{x}}%<extra></extra>"})
    return _figure(lines, "Rank when the easiest X% of images are dropped",
                   xaxis={"title": {"text": "easiest images dropped (%)"}, "dtick": 10},
                   yaxis={"title": {"text": "rank"}, "autorange": "reversed", "dtick": 1})


def hardest(request: HttpRequest, slug: str, task: str) -> HttpResponse:
    """A task's images ranked by difficulty across its public submissions with outcomes, their
    spread per region, corruption and class, and the data-diet ranking."""
    the_task = _classifier_task(slug, task)
    summary = difficulty.task_difficulty(the_task)
    charts: list[tuple[str, Figure]] = []
    if summary:
        charts = [(f"difficulty-{key}", group_figure(key=key, stats=stats))
                  for key, stats in summary["groups"].items()]
        charts.append(("data-diet", diet_figure(members=summary["members"], diet=summary["diet"])))
    return render(request, "boards/hardest.html", {
        "benchmark": the_task.benchmark, "task": the_task, "summary": summary, "charts": charts,
        "min_models": difficulty.MIN_MODELS, "group_titles": GROUP_TITLES,
    })


def failures(request: HttpRequest, pk: int, task: str) -> HttpResponse:
    """A submission's failures on one task, grouped (``?by=`` region, income_group, corruption or
    label), with thumbnails, each image's difficulty across the field, and the result's saliency
    maps laid over the thumbnail where the runner computed them, one per method with a selector
    (a malformed entry: none, and a note)."""
    submission = visible_submission(request, pk)
    job = (EvaluationJob.objects.filter(submission=submission, task__slug=task,
                                        state=EvaluationJob.State.SUCCEEDED, task__benchmark__kind="classifier")
           .select_related("task", "task__benchmark").first())
    if job is None:
        raise Http404("No classifier result on this task.")
    try:
        arrays = difficulty.job_outcomes(job)  # compact vectors: the file is read once, ever
    except (PerImageError, OSError):
        arrays = None
    keys = [k for k in difficulty.GROUP_KEYS if arrays is not None and k in arrays]
    by = request.GET.get("by") or (keys[0] if keys else "label")
    if arrays is not None and by not in keys:
        raise Http404(f"This task's outcomes are not grouped by {by!r}.")
    summary = difficulty.task_difficulty(job.task)
    groups = difficulty.explorer(job.task, arrays, summary, by) if arrays is not None else []
    overlays, saliency_problem = _overlays(job.result)
    overlaid = 0
    for group in groups:
        for item in (*group["failures"], *group["successes"]):
            item["overlays"] = overlays.positions(item["row"], item["index"]) if overlays is not None else []
            overlaid += bool(item["overlays"])
    return render(request, "boards/failures.html", {
        "submission": submission, "job": job, "task": job.task, "groups": groups, "by": by,
        "keys": [(k, GROUP_TITLES[k]) for k in keys], "has_outcomes": arrays is not None,
        "has_thumbs": arrays is not None and "thumb" in arrays, "summary": summary,
        "synthetic": result_is_synthetic(job.result), "saliency": overlays,
        "saliency_problem": saliency_problem, "overlaid": overlaid,
    })


def _overlays(result: Any) -> tuple[saliency_overlays.Overlays | None, str | None]:
    """The result's saliency maps, or (None, why not) when its entry is malformed (logged: the
    runner wrote it, so a malformed one is the runner's bug, not the visitor's)."""
    try:
        return saliency_overlays.read(result), None
    except saliency_overlays.SaliencyError as exc:
        log.warning("unreadable saliency entry: %s", exc)
        return None, str(exc)


def thumbnail(request: HttpRequest, pk: int, job_id: int, position: int) -> HttpResponse:
    """One thumbnail of a job's per-image file as a PNG. Private to whoever may see the
    submission (404 otherwise), and never kept by a shared cache."""
    submission = visible_submission(request, pk)
    job = get_object_or_404(submission.jobs.select_related("task"), pk=job_id, state="succeeded")
    if not job.per_image:
        raise Http404("No thumbnails.")
    try:
        with job.per_image.open("rb") as fh:
            thumbs = read_thumbnails(fh)
    except (PerImageError, OSError):
        thumbs = None
    data = difficulty.thumbnail_png({"thumb": thumbs} if thumbs is not None else {}, position)
    if data is None:
        raise Http404("No such thumbnail.")
    response = HttpResponse(data, content_type="image/png")
    # private: a shared cache must not keep serving it after its submission is made private
    response["Cache-Control"] = "private, max-age=3600"
    return response


def saliency_overlay(request: HttpRequest, pk: int, job_id: int, position: int) -> HttpResponse:
    """Saliency map ``position`` of a job's result as a PNG to lay over its image's thumbnail
    (saliency_overlays.overlay_png: RGBA, the 16×16 map upsampled to 64×64). Private to whoever
    may see the submission (404 otherwise) and never kept by a shared cache, like the thumbnails;
    404 too when the result has no such map or its entry is malformed."""
    submission = visible_submission(request, pk)
    job = get_object_or_404(submission.jobs.all(), pk=job_id, state="succeeded")
    overlays, _ = _overlays(job.result)
    if overlays is None or not 0 <= position < len(overlays.maps):
        raise Http404("No such saliency map.")
    response = HttpResponse(saliency_overlays.overlay_png(overlays.maps[position]), content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
    return response
