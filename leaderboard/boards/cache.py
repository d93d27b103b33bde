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
import secrets
from collections.abc import Callable, Iterable

from django.conf import settings
from django.core.cache import caches
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse

from leaderboard.benchmarks.models import Benchmark, Task

from .models import BoardEntry

KEPT_HEADERS = ("Content-Disposition",)


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
    The new version is random rather than counted, so no version ever comes back — not after a
    restore from backup, nor in a test database created afresh — and concurrent bumps need no lock."""
    ids = sorted(set(benchmark_ids))
    if ids:
        Benchmark.objects.filter(pk__in=ids).update(board_version=secrets.randbits(62))


@receiver([post_save, post_delete], sender=BoardEntry)
def _entry_changed(sender, instance: BoardEntry, **kwargs) -> None:
    bump([instance.benchmark_id])


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


def cached_for_visitors(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Serve ``view``'s anonymous GETs from the page cache; the benchmark is the view's ``slug``
    argument (none: the page depends on every benchmark)."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not _cacheable(request):
            return view(request, *args, **kwargs)
        version = board_version(kwargs.get("slug"))
        if version is None:
            return view(request, *args, **kwargs)
        scope = kwargs.get("slug") or "*"
        key = "page:" + hashlib.sha256(f"{scope}|{version}|{request.get_full_path()}".encode()).hexdigest()
        cache = caches[settings.PAGE_CACHE_ALIAS]
        hit = cache.get(key)
        if hit is not None:
            content, content_type, headers = hit
            response = HttpResponse(content, content_type=content_type)
            for name, value in headers.items():
                response[name] = value
            response["X-Page-Cache"] = "hit"
            return response
        response = view(request, *args, **kwargs)
        if response.status_code == 200 and not response.streaming and not response.cookies:
            headers = {h: response[h] for h in KEPT_HEADERS if response.has_header(h)}
            cache.set(key, (response.content, response["Content-Type"], headers), settings.PAGE_CACHE_SECONDS)
            response["X-Page-Cache"] = "miss"
        return response

    return wrapper
