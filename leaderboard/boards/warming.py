"""The page cache's warmer: renders a changed board's pages into the cache before visitors ask
(the site worker runs it: boards/tasks.py, sent after the commit by boards/versions.py)."""
from __future__ import annotations

import collections
import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.test import RequestFactory  # builds a WSGI request; no test machinery
from django.urls import Resolver404, resolve, reverse

from leaderboard.benchmarks.models import Benchmark

from .cache import recent_pages

log = logging.getLogger(__name__)


def standard_pages(slug: str) -> tuple[list[str], list[str]]:
    """The pages of one benchmark the warmer always renders, quick ones first: its board (first
    task) and the API's leaderboard, then both exports; every other page of it once a visitor
    has read it."""
    return ([reverse("benchmark", args=[slug]), reverse("api-leaderboard", args=[slug])],
            [reverse("board-export", args=[slug, "csv"]), reverse("board-export", args=[slug, "json"])])


def page_render(path: str) -> str | None:
    """Render ``path`` (with its query) as an anonymous visitor would get it, into the page cache,
    unless the cache already holds it at the current version. Returns what ``X-Page-Cache`` said
    (hit: nothing to do; miss: rendered and stored), None when the page is not cached (404, a view
    without the cache)."""
    site = urlsplit(settings.SITE_URL)
    request = RequestFactory().get(path, HTTP_HOST=site.netloc or "localhost",
                                   secure=site.scheme == "https", HTTP_ACCEPT="application/json")
    try:
        match = resolve(request.path_info)
    except Resolver404:
        return None
    request.resolver_match = match
    request.user = AnonymousUser()
    request.page_cache_refresh = True  # type: ignore[attr-defined]
    response = match.func(request, *match.args, **match.kwargs)
    if hasattr(response, "render") and callable(response.render):
        response.render()
    if response.streaming:
        collections.deque(response.streaming_content, maxlen=0)  # drained: the cache keeps it as it streams
    # not response.close(): it sends request_finished, which closes the worker's database connection
    return response.get("X-Page-Cache")


def boards_warm(*, benchmark_ids: Iterable[int]) -> dict[str, int]:
    """Render the boards of these benchmarks into the page cache before visitors ask: the home
    page and each one's board and API leaderboard first (quick, and read most), then the pages
    visitors read recently, the exports (the slowest: 90-100 ms each at 10,000 submissions) and
    the other pages of every benchmark (the optimizer profiles). Visitors get the previous render
    of a page until its turn comes. A page whose render is already current is left alone, so a
    burst of changes costs one render per page. Returns counts of the X-Page-Cache outcomes
    ({"miss": rendered, "hit": already current, "none": not cached})."""
    counts: dict[str, int] = {}
    if settings.PAGE_CACHE_SECONDS <= 0:
        return counts
    quick, recent, slow = ["/"], [], []
    for slug in Benchmark.objects.filter(pk__in=list(benchmark_ids)).order_by("pk").values_list("slug", flat=True):
        pages, exports = standard_pages(slug)
        quick += pages
        recent += recent_pages(slug)
        slow += exports
    paths = quick + recent + slow + recent_pages("*")
    for path in dict.fromkeys(paths):
        try:
            outcome = page_render(path) or "none"
        except Exception:  # noqa: BLE001 - one page failing must not keep the others cold
            log.exception("warming %s failed", path)
            outcome = "error"
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts
