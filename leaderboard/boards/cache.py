"""The page cache for visitors: board pages, exports and the home page rendered once per board
state and served to every anonymous visitor from the cache.

Correctness before speed: a cached page is keyed by the board's version
(``Benchmark.board_version``, in the database so every web process and worker sees the same
value) and the request's full path. Every change to a board row bumps its benchmark's version in
the same transaction (signals on BoardEntry, Task and Benchmark, and the services that update rows
in bulk), so the next request renders afresh; ``PAGE_CACHE_SECONDS`` only bounds how long an entry
that nobody asks for stays. Logged-in users (who may see their private submissions, and whose pages
carry their name and a CSRF token), requests with a session, pending messages or credentials, and
anything but a plain 200 response are never cached.
"""
from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from django.conf import settings
from django.core.cache import caches
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse

from leaderboard.benchmarks.models import Benchmark, Task, new_board_version

from .models import BoardEntry

KEPT_HEADERS = ("Content-Disposition",)
# The query parameters the cached views read; any other is left out of the key.
QUERY_KEYS = ("task", "sort", "dir", "baselines", "family", "since", "offset")
log = logging.getLogger(__name__)


def board_version(slug: str | None) -> str | None:
    """The version of one benchmark's boards, or (``slug`` None) of all of them (every benchmark's
    id and version, so adding or removing one changes it too); None for an unknown benchmark (the
    view answers 404 itself)."""
    if slug is None:
        return ",".join(f"{pk}:{v}" for pk, v in Benchmark.objects.order_by("pk").values_list("pk", "board_version"))
    version = Benchmark.objects.filter(slug=slug).values_list("board_version", flat=True).first()
    return None if version is None else str(version)


def bump(benchmark_ids: Iterable[int]) -> None:
    """Mark these benchmarks' boards as changed: their cached pages (and the home page) are stale.
    The new version is random rather than counted (new benchmarks start random too), so no
    version ever comes back — not after a restore from backup, nor in a database created afresh —
    and concurrent bumps need no lock."""
    ids = sorted(set(benchmark_ids))
    if ids:
        Benchmark.objects.filter(pk__in=ids).update(board_version=new_board_version())


@receiver([post_save, post_delete], sender=BoardEntry)
def _entry_changed(sender, instance: BoardEntry, **kwargs) -> None:
    bump([instance.benchmark_id])


@receiver(pre_save, sender=Task)
def _task_moving(sender, instance: Task, **kwargs) -> None:
    """A task moved to another benchmark leaves the old one's pages stale too."""
    if instance.pk is not None:
        old = Task.objects.filter(pk=instance.pk).values_list("benchmark_id", flat=True).first()
        if old is not None and old != instance.benchmark_id:
            bump([old])


@receiver([post_save, post_delete], sender=Task)
def _task_changed(sender, instance: Task, **kwargs) -> None:
    bump([instance.benchmark_id])


@receiver(post_save, sender=Benchmark)
def _benchmark_changed(sender, instance: Benchmark, **kwargs) -> None:
    bump([instance.pk])


def _cacheable(request: HttpRequest) -> bool:
    return (
        settings.PAGE_CACHE_SECONDS > 0
        and request.method in ("GET", "HEAD")
        and settings.SESSION_COOKIE_NAME not in request.COOKIES
        and "messages" not in request.COOKIES
        and "HTTP_AUTHORIZATION" not in request.META
        and not request.user.is_authenticated
    )


@functools.cache
def release() -> str:
    """What the deployed code looks like: RELEASE when set (e.g. the git commit), else a digest of
    the templates' names and times, so a deploy never serves pages rendered by the old code."""
    if settings.RELEASE:
        return settings.RELEASE
    digest = hashlib.sha256()
    for folder in settings.TEMPLATES[0]["DIRS"]:
        for path in sorted(Path(folder).rglob("*.html")):
            digest.update(f"{path}:{path.stat().st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def page_key(request: HttpRequest, scope: str, version: str) -> str:
    """The cache key of a page: the release, the benchmark's version, the path and only the query
    parameters the board views read (sorted), so junk parameters cannot fill the cache."""
    query = sorted((k, v) for k, v in request.GET.items() if k in QUERY_KEYS)
    raw = f"{release()}|{scope}|{version}|{request.path}|{query}"
    return "page:" + hashlib.sha256(raw.encode()).hexdigest()


def cached_for_visitors(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Serve ``view``'s anonymous GETs from the page cache; the benchmark is the view's ``slug``
    argument (none: the page depends on every benchmark). The cache failing (Redis down) costs
    speed, never a page."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not _cacheable(request):
            return view(request, *args, **kwargs)
        version = board_version(kwargs.get("slug"))
        if version is None:
            return view(request, *args, **kwargs)
        key = page_key(request, kwargs.get("slug") or "*", version)
        cache = caches[settings.PAGE_CACHE_ALIAS]
        try:
            hit = cache.get(key)
        except Exception:  # noqa: BLE001 - any cache backend failure
            log.warning("page cache unavailable; rendering %s", request.path, exc_info=True)
            return view(request, *args, **kwargs)
        if hit is not None:
            content, content_type, headers = hit
            response = HttpResponse(content, content_type=content_type)
            for name, value in headers.items():
                response[name] = value
            response["X-Page-Cache"] = "hit"
            return response
        response = view(request, *args, **kwargs)
        if (response.status_code == 200 and not response.streaming and not response.cookies
                and len(response.content) <= settings.PAGE_CACHE_MAX_BYTES):
            headers = {h: response[h] for h in KEPT_HEADERS if response.has_header(h)}
            try:
                cache.set(key, (response.content, response["Content-Type"], headers), settings.PAGE_CACHE_SECONDS)
            except Exception:  # noqa: BLE001 - any cache backend failure
                log.warning("page cache unavailable; %s not stored", request.path, exc_info=True)
                return response
            response["X-Page-Cache"] = "miss"
        return response

    return wrapper
