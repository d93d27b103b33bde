"""The page cache's early answer: an anonymous GET of a cached page that the cache holds at the
current version (or a conditional request for it) is answered here, before the session, CSRF,
authentication and messages middleware and the view run, from boards/cache.py's
:func:`~leaderboard.boards.cache.cached_answer` (the same key, version and entry the view's
wrapper reads). It sits below every middleware that adds headers to every answer (security,
common, frame options), so an early answer carries the same headers as the one the view's
wrapper gives; tests/integration/boards/test_page_cache_early.py compares them."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.urls import Resolver404, resolve

from .cache import cached_answer


class PageCacheMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if request.method in ("GET", "HEAD"):
            try:
                match = resolve(request.path_info)
            except Resolver404:
                match = None
            if match is not None:
                answer = cached_answer(request, match.func, match.kwargs)
                if answer is not None:
                    return answer
        return self.get_response(request)
