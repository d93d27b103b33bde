from __future__ import annotations

import json
import math
import re
from datetime import date
from typing import Any
from urllib.parse import urlencode

from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.utils.html import escape

from leaderboard.benchmarks.models import Benchmark
from leaderboard.exports import csv_response, csv_stream, json_stream
from leaderboard.submissions import selectors as submission_selectors
from leaderboard.submissions.models import Submission
from leaderboard.submissions.views import visible_submission

from . import algoperf, charts, selectors
from .cache import QUERY_KEYS, cached_for_visitors
from .compare import paired_tests
from .page_charts import board_figures, with_notes

PAGE_SIZE = 50
EXPORT_LIMIT = 100_000


@cached_for_visitors
def home(request):
    benchmarks = selectors.benchmarks_with_tasks()
    cards = [{"benchmark": b, "lead_task": b.lead_task,
              "n_tasks": len(b.tasks.all()), "leaders": b.leaders} for b in benchmarks]
    kinds = [(label, [c for c in cards if c["benchmark"].kind == kind]) for kind, label in Benchmark.Kind.choices]
    return render(request, "boards/home.html", {"kinds": [(label, cs) for label, cs in kinds if cs]})


MAX_OFFSET = 10 ** 9  # past any board's rows; an offset past PostgreSQL's bigint answered 500


def _int(value, default: int) -> int:
    """``value`` as a non-negative int at most MAX_OFFSET, ``default`` when it is no integer."""
    try:
        return min(max(0, int(value)), MAX_OFFSET)
    except (TypeError, ValueError):
        return default


def _since(value) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def _board_request(request, bench: Benchmark, *, limit: int, offset: int | None = None):
    tasks = list(bench.tasks.all())
    task = next((t for t in tasks if t.slug == request.GET.get("task")), tasks[0] if tasks else None)
    if task is None:
        raise Http404("This benchmark has no tasks.")
    direction = request.GET.get("dir")
    page = selectors.board_rows(
        task=task, user=request.user, offset=_int(request.GET.get("offset"), 0) if offset is None else offset,
        limit=limit, sort=request.GET.get("sort", ""),
        descending=None if direction not in ("asc", "desc") else direction == "desc",
        baselines={"only": True, "exclude": False}.get(request.GET.get("baselines", "")),
        family=request.GET.get("family", "").strip(), since=_since(request.GET.get("since")),
    )
    return tasks, task, page


@cached_for_visitors
def benchmark(request, slug: str):
    bench = get_object_or_404(Benchmark.objects.prefetch_related("tasks"), slug=slug)
    tasks, task, page = _board_request(request, bench, limit=PAGE_SIZE)
    records = selectors.board_as_records(page)
    times = (selectors.board_time_to_target(task=task, submission_ids=[r.submission_id for r in page.rows])
             if selectors.is_training_task(task) else None)
    figures = board_figures(task=task, tasks=tasks, records=records, user=request.user, times=times)
    # Links carry only what the page cache's key holds (the parameters the board reads, the last
    # of each, sorted): a visitor's other parameters must not reach the page every visitor gets.
    query = urlencode(sorted((k, v) for k, v in request.GET.items() if k in QUERY_KEYS and k != "offset"))
    return render(request, "boards/benchmark.html", {
        "benchmark": bench, "tasks": tasks, "task": task, "page": page,
        "baselines": request.GET.get("baselines", ""), "family": request.GET.get("family", ""),
        "since": request.GET.get("since", ""),
        "charts": figures, "times": times,
        "query": query,
        "next_offset": page.offset + page.limit if page.offset + page.limit < page.total else None,
        "prev_offset": max(0, page.offset - page.limit) if page.offset else None,
    })


@cached_for_visitors
def board_export(request, slug: str, fmt: str):
    """The whole board (all pages) of one task as CSV or JSON, with the same filters as the page,
    streamed (rows are formatted as the client reads them). The page cache keeps a copy as it
    streams out and answers conditional requests (ETag, Last-Modified) from the board version."""
    if fmt not in ("csv", "json"):
        raise Http404("Exports come as .csv or .json.")
    bench = get_object_or_404(Benchmark.objects.prefetch_related("tasks"), slug=slug)
    _, task, page = _board_request(request, bench, limit=EXPORT_LIMIT, offset=0)
    records = selectors.board_as_records(page)
    times = (selectors.board_time_to_target(task=task, submission_ids=[r["submission_id"] for r in records])
             if selectors.is_training_task(task) else None)
    if times is not None:  # JSON has no ∞: "not reached" is reached false with a null time
        for r in records:
            per = times.times.get(r["submission_id"], {})
            r["time_to_target"] = {clock: None if per.get(clock) in (None, math.inf) else per[clock]
                                   for clock in algoperf.CLOCKS}
            r["time_to_target"]["reached"] = None if per.get("seconds") is None else per["seconds"] != math.inf
    if fmt == "json":
        target = times.target if times is not None else None
        return json_stream({"benchmark": bench.slug, "task": task.slug, "primary_metric": task.primary_metric,
                            "higher_is_better": task.higher_is_better, "rows": records,
                            **({"target": {"rule": target.rule, "value": target.value, "key": target.key,
                                           "source": target.source}} if target is not None else {})})
    keys = [task.primary_metric] + page.metric_keys
    header = ["rank", "tied_with_above", "tie_rule", "shared_rank", "submission_id", "name", "owner", "is_baseline", "model_family",
              "synthetic_data", "loop_in_sandbox", *keys, f"{task.primary_metric}_ci95_low", f"{task.primary_metric}_ci95_high",
              *(["samples_to_target", "seconds_to_reference_target"] if times is not None else []), "submitted_at"]

    def reached(r: dict, clock: str) -> Any:
        value = (times.times.get(r["submission_id"], {}) if times is not None else {}).get(clock)
        if value is None:
            return ""
        return "not reached" if value == math.inf else int(value) if float(value).is_integer() else value

    rows = ([r["rank"], r["tied_with_above"], r["tie_rule"], r["shared_rank"] or "", r["submission_id"], r["name"], r["owner"], r["is_baseline"],
             r["model_family"], r["synthetic_data"], r["loop_in_sandbox"], *[r["metrics"].get(k, "") for k in keys],
             *(r["ci95"] or ["", ""]), *([reached(r, "samples"), reached(r, "seconds")] if times is not None else []),
             r["submitted_at"]] for r in records)
    return csv_stream(f"{bench.slug}-{task.slug}.csv", header, rows)


def submission_export(request, pk: int, fmt: str):
    """A submission's results as CSV (one row per task and metric, each saying whether the result
    was scored on synthetic data and whether its loop ran in the sandbox) or JSON (its status,
    whose jobs carry the same two flags, and the raw result documents)."""
    if fmt not in ("csv", "json"):
        raise Http404("Exports come as .csv or .json.")
    submission = visible_submission(request, pk)
    jobs = list(submission.jobs.select_related("task", "runner"))
    status = submission_selectors.submission_status(submission=submission, jobs=jobs,
                                                    detailed=submission.details_visible_to(request.user))
    if fmt == "json":
        full = {**status, "results": {j.task.slug: j.result for j in jobs}}
        return JsonResponse(full, json_dumps_params={"indent": 1})
    rows = []
    for job in status["jobs"]:
        labels = [job["synthetic_data"], job["loop_in_sandbox"]]
        for metric, value in sorted(job["metrics"].items()):
            ci = job["ci95"].get(metric) or ["", ""]
            rows.append([job["task"], metric, value, ci[0], ci[1], job["state"], *labels])
        if not job["metrics"]:
            rows.append([job["task"], "", "", "", "", job["state"], *labels])
    return csv_response(f"submission-{pk}.csv", ["task", "metric", "value", "ci95_low", "ci95_high", "state",
                                                 "synthetic_data", "loop_in_sandbox"], rows)


def badge(request, pk: int):
    """An SVG badge with the submission's rank on its benchmark's lead task (for READMEs)."""
    submission = visible_submission(request, pk)
    task = submission.benchmark.lead_task
    ranked = selectors.submission_rank(submission_id=pk, task=task) if task else None
    label = escape(f"{submission.benchmark.slug}")
    value = f"#{ranked[0]} of {ranked[1]}" if ranked else submission.status
    left, right = 7 * len(label) + 12, 7 * len(value) + 12
    colour = "#2456d6" if ranked else "#9aa3b5"
    svg = f"""<svg xmlns="http://www.w3.org/2000/svg" width="{left + right}" height="20" role="img" aria-label="{label}: {value}">
<title>{label}: {value}</title>
<rect width="{left}" height="20" fill="#555"/><rect x="{left}" width="{right}" height="20" fill="{colour}"/>
<g fill="#fff" text-anchor="middle" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11">
<text x="{left / 2}" y="14">{label}</text><text x="{left + right / 2}" y="14">{escape(value)}</text></g></svg>"""
    response = HttpResponse(svg, content_type="image/svg+xml")
    response["Cache-Control"] = "max-age=300"
    return response


def compare(request):
    """Two to four submissions side by side: every task's metrics and the paired differences
    against the first one."""
    ids_text = ",".join(request.GET.getlist("ids"))  # ?ids=3,7 and ?ids=3&ids=7 alike
    form = {"ids_text": ids_text[:200]}
    parts = [x for x in ids_text.replace(" ", "").split(",") if x]
    choose = "Choose two to four submissions to compare (e.g. ?ids=3,7)."
    if not parts:  # the empty form: nothing was asked yet
        return render(request, "boards/compare.html", {"error": choose, **form})
    error = None
    not_number = next((x for x in parts if not re.fullmatch(r"[0-9]{1,18}", x)), None)
    if not_number is not None:
        error = f"{not_number[:40]!r} is not a submission number. {choose}"
    elif not 2 <= len(parts) <= 4:
        error = f"{len(parts)} submissions given. {choose}"
    elif len(set(map(int, parts))) != len(parts):
        error = f"A submission is listed twice ({ids_text[:80]}). {choose}"
    if error is not None:  # a mistaken address: 400, saying what is wrong, with the form to fix it
        return render(request, "boards/compare.html", {"error": error, **form}, status=400)
    ids = [int(x) for x in parts]
    subs = {s.pk: s for s in Submission.objects.select_related("benchmark", "owner").filter(pk__in=ids)}
    subs_ordered = [subs[i] for i in ids if i in subs and subs[i].visible_to(request.user)]
    if len(subs_ordered) != len(ids):
        raise Http404("One of these submissions does not exist or is private.")
    if len({s.benchmark_id for s in subs_ordered}) != 1:
        error = "These submissions belong to different benchmarks; compare submissions of one benchmark."
        return render(request, "boards/compare.html", {"error": error, **form}, status=400)
    table = submission_selectors.comparison(submissions=subs_ordered)
    figures = []
    for task in table["tasks"]:
        runs = [{"name": s.name, "trajectory": task["curves"][s.pk]["trajectory"]}
                for s in subs_ordered if "trajectory" in task["curves"].get(s.pk, {})]
        if runs:
            figures.append((f"trajectory-{task['slug']}",
                            charts.trajectory_figure(function=task["title"], runs=runs)))
    return render(request, "boards/compare.html", {
        "submissions": subs_ordered, "table": table, "charts": figures, "ids": ids, **form,
        "ids_json": json.dumps(ids), "paired": paired_tests(submissions=subs_ordered),
    })


@cached_for_visitors  # reads every training result's curves: one rendering per version of the boards
def optimizer_profiles(request):
    """The cross-task score of the optimizer track: AlgoPerf performance profiles over time to
    each workload's reference target, in training seconds and in samples."""
    data = selectors.optimizer_profiles()
    figures = []
    if data["profiles"]:
        for clock, name in (("seconds", "profiles"), ("samples", "profiles-samples")):
            figures.append((name, charts.performance_profile_figure(
                profiles=data["clocks"][clock]["profiles"], tau_max=data["tau_max"], clock=clock, n=data["n"])))
        flags = data["flags"].values()
        with_notes(figures, synthetic=any(f["synthetic_data"] for f in flags),
                   loop_in_sandbox=any(f["loop_in_sandbox"] for f in flags), some=True)
    return render(request, "boards/profiles.html", {"data": data, "charts": figures,
                                                    "clock_labels": (("seconds", "training seconds"),
                                                                     ("samples", "samples"))})
