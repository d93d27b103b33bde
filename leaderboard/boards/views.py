from __future__ import annotations

from django.shortcuts import get_object_or_404, render

from leaderboard.benchmarks.models import Benchmark

from . import selectors

PAGE_SIZE = 50


def home(request):
    benchmarks = selectors.benchmarks_with_tasks()
    leaders = selectors.benchmark_leaders(benchmarks=benchmarks)
    cards = [{"benchmark": b, "lead_task": b.tasks.all()[0] if b.tasks.all() else None,
              "leaders": leaders.get(b.pk, [])} for b in benchmarks]
    kinds = [(label, [c for c in cards if c["benchmark"].kind == kind]) for kind, label in Benchmark.Kind.choices]
    return render(request, "boards/home.html", {"kinds": [(label, cs) for label, cs in kinds if cs]})


def _int(value, default: int) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return default


def benchmark(request, slug: str):
    bench = get_object_or_404(Benchmark.objects.prefetch_related("tasks"), slug=slug)
    tasks = list(bench.tasks.all())
    task = next((t for t in tasks if t.slug == request.GET.get("task")), tasks[0] if tasks else None)
    page = None
    if task is not None:
        direction = request.GET.get("dir")
        baselines = {"only": True, "exclude": False}.get(request.GET.get("baselines", ""))
        page = selectors.board_rows(
            task=task, user=request.user, offset=_int(request.GET.get("offset"), 0), limit=PAGE_SIZE,
            sort=request.GET.get("sort", ""), descending=None if direction not in ("asc", "desc") else direction == "desc",
            baselines=baselines,
        )
    return render(request, "boards/benchmark.html", {
        "benchmark": bench, "tasks": tasks, "task": task, "page": page,
        "baselines": request.GET.get("baselines", ""),
        "next_offset": page.offset + page.limit if page and page.offset + page.limit < page.total else None,
        "prev_offset": max(0, page.offset - page.limit) if page and page.offset else None,
    })
