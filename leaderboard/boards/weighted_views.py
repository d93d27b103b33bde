"""The weighted-ranking page (``/b/<slug>/weighted/``); kept beside views.py so the board views'
caching (cache.py keys only the query parameters those views read) never serves one reader's
weights to another: this page is rendered for every request."""
from __future__ import annotations

from django.http import Http404
from django.shortcuts import get_object_or_404, render

from leaderboard.benchmarks.models import Benchmark

from . import dynascore, weighted


def weighted_ranking(request, slug: str):
    """A classifier benchmark's public results ranked by Dynascore under the weights of the query
    string (``w_<metric>``, 0–5; defaults performance 4, others 1); ``reported=ranked`` ranks the
    reported claims with them. A bad weight answers 400 with the page saying which parameter."""
    bench = get_object_or_404(Benchmark.objects.prefetch_related("tasks"), slug=slug)
    include = request.GET.get("reported") == "ranked"
    try:
        board = weighted.weighted_board(bench, request.GET, include_reported=include)
    except weighted.BadWeights as exc:
        return render(request, "boards/weighted.html", {"benchmark": bench, "error": str(exc)}, status=400)
    except ValueError as exc:
        raise Http404(str(exc)) from None
    return render(request, "boards/weighted.html", {
        "benchmark": bench, "board": board, "data": board.data(),
        "weight_range": (dynascore.WEIGHT_MIN, dynascore.WEIGHT_MAX),
        "default_performance": dynascore.DEFAULT_PERFORMANCE_WEIGHT, "default_other": dynascore.DEFAULT_WEIGHT,
    })
