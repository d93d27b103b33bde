"""The page cache for visitors: board pages, exports, the home page and the API's anonymous reads,
rendered once per board state, before visitors ask, and served to every anonymous visitor from
the cache.

Correctness before speed: a cached page is stored under the release and the request's path (with
only the query parameters the views read) together with the board version it was rendered at
(``Benchmark.board_version``, in the database so every web process and worker sees the same
value; for the home page, every benchmark's). Every change to a board row bumps its benchmark's
version in the same transaction (boards/versions.py: signals on BoardEntry, Task and Benchmark,
and the services that update rows in bulk). After the commit, a site-worker task
(``leaderboard.warm_boards``, boards/tasks.py → boards/warming.py) renders the changed boards'
pages, exports and the home page, and every other page visitors read recently, into the cache. Until that render is in, a visitor gets the previous
render, for at most ``PAGE_CACHE_STALE_SECONDS`` after the change (a version carries its time);
after that, a page whose render is not in is rendered for the visitor. ``PAGE_CACHE_SECONDS``
only bounds how long an entry that nobody asks for stays.

Every page answers conditional requests: its ETag (weak) is the digest of its key and version and
its Last-Modified the version's time, so a client that holds the current render gets a 304 without
the cache or the view being asked. Each render is stored twice, plain and gzipped, and a visitor
who accepts gzip gets the gzipped copy. Logged-in users (who may see their private submissions,
and whose pages carry their name and a CSRF token), requests with a session, pending messages or
credentials (an API token), and anything but a plain 200 response are never cached; their
responses say ``Cache-Control: private``. Every response of a cached view varies on Cookie and
Authorization, and an anonymous one on Accept-Encoding. Hits and 304s are answered before the
session, CSRF and authentication middleware (boards/middleware.py → :func:`cached_answer`).

The module is one piece on purpose: the early answer, the view's wrapper and the warmer must
compute the same key, version, ETag and stored entry, and one module for all of them is what keeps
them the same (versions are written in boards/versions.py, pages rendered in boards/warming.py).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

from django.conf import settings
from django.core.cache import BaseCache, caches
from django.http import HttpRequest, HttpResponse, QueryDict
from django.http.response import HttpResponseBase
from django.utils.cache import get_conditional_response, patch_cache_control, patch_vary_headers
from django.utils.http import http_date, parse_http_date, quote_etag
from django.utils.text import compress_string

from leaderboard.benchmarks.models import Benchmark, board_version_time

KEPT_HEADERS = ("Content-Disposition", "Allow", "Vary")  # Vary: the API varies on Accept
# The query parameters the cached views read; any other is left out of the key.
QUERY_KEYS = ("task", "sort", "dir", "baselines", "family", "since", "offset", "limit")
# Pages visitors read recently, per benchmark ("*": pages of every benchmark), re-rendered by the
# warmer; the most recent MAX_RECENT_PAGES of each are kept.
MAX_RECENT_PAGES = 64
log = logging.getLogger(__name__)


def board_version(slug: str | None) -> str | None:
    """The version of one benchmark's boards, or (``slug`` None) of all of them (every benchmark's
    id and version, so adding or removing one changes it too); None for an unknown benchmark (the
    view answers 404 itself)."""
    if slug is None:
        return ",".join(
            f"{pk}:{v}" for pk, v in Benchmark.objects.order_by("pk").values_list("pk", "board_version")
        )
    version = Benchmark.objects.filter(slug=slug).values_list("board_version", flat=True).first()
    return None if version is None else str(version)


def version_time(version: str) -> float | None:
    """When ``version`` (as :func:`board_version` gives it) was made, seconds since the epoch: for
    the home page's, the latest of its benchmarks' that carry a time (versions made before they
    did are older than any that does). None when none carries a time. The ETag, not this, tells
    a deleted benchmark's home page apart, as a conditional request's If-None-Match outranks
    its If-Modified-Since."""
    try:
        numbers = [int(part.rsplit(":", 1)[-1]) for part in version.split(",") if part]
    except ValueError:  # not a board's version (a submission page's digest)
        return None
    known = [t for t in map(board_version_time, numbers) if t is not None]
    return max(known) if known else None


def _without_credentials(request: HttpRequest) -> bool:
    """No session or messages cookie and no Authorization: nothing that could make a page private
    (a user is logged in only through the session; an API token comes in Authorization)."""
    return (
        settings.SESSION_COOKIE_NAME not in request.COOKIES
        and "messages" not in request.COOKIES
        and "HTTP_AUTHORIZATION" not in request.META
    )


def _anonymous(request: HttpRequest) -> bool:
    return _without_credentials(request) and not request.user.is_authenticated


def _wants_json(request: HttpRequest) -> bool:
    """An API request that gets JSON: no ``format`` but json, and no browser asking for HTML (the
    browsable API, which carries a login form and CSRF token, is never cached). Media types are
    case-insensitive and ``text/*`` or ``*/html`` select the browsable API as ``text/html`` does."""
    accept = request.META.get("HTTP_ACCEPT", "").lower()
    return request.GET.get("format", "json") == "json" and not ("html" in accept or "text/*" in accept)


@functools.cache
def release() -> str:
    """What the deployed code looks like: RELEASE when set (e.g. the git commit), else a digest of
    the templates' names and times, so a deploy never serves pages rendered by the old code."""
    if settings.RELEASE:
        return settings.RELEASE
    digest = hashlib.sha256()
    folders = cast(list[str], settings.TEMPLATES[0]["DIRS"])
    for folder in folders:
        for path in sorted(Path(folder).rglob("*.html")):
            digest.update(f"{path}:{path.stat().st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _query(request: HttpRequest) -> str:
    """The query parameters the views read, sorted, as a query string."""
    from urllib.parse import urlencode

    return urlencode(sorted((k, v) for k, v in request.GET.items() if k in QUERY_KEYS))


def page_key(request: HttpRequest, scope: str) -> str:
    """The cache key of a page: the release, the benchmark (``scope``), the path and only the query
    parameters the views read (sorted), so junk parameters cannot fill the cache. The version is
    not part of the key: the entry holds the version it was rendered at."""
    raw = f"{release()}|{scope}|{request.path}|{_query(request)}"
    return "page:" + hashlib.sha256(raw.encode()).hexdigest()


def _etag(key: str, version: str) -> str:
    """Weak: the gzipped and the plain answer of one version are the same page in other bytes, and
    a client holding either may revalidate it (If-None-Match compares weakly)."""
    return "W/" + quote_etag(hashlib.sha256(f"{key}|{version}".encode()).hexdigest()[:32])


def _validators(response: HttpResponseBase, etag: str, version: str) -> None:
    response["ETag"] = etag
    modified = version_time(version)
    if modified is not None:
        response["Last-Modified"] = http_date(int(modified))


def _remember(cache: BaseCache, scope: str, path: str) -> None:
    """Note ``path`` (with its query) as a page of ``scope`` that visitors read, for the warmer.
    A lost update between two processes costs one later render, never a wrong page."""
    key = f"recent:{release()}:{scope}"
    recent = cache.get(key) or {}
    recent[path] = time.time()
    if len(recent) > MAX_RECENT_PAGES:
        ranked = sorted(recent.items(), key=lambda item: item[1])
        recent = dict(ranked[-MAX_RECENT_PAGES:])
        # A page that leaves the list leaves the cache: a crawler varying ?offset= or ?family=
        # then holds at most MAX_RECENT_PAGES pages of a scope, not one per value it tries.
        dropped = [_path_key(scope, old) for old, _ in ranked[:-MAX_RECENT_PAGES]]
        cache.delete_many([k for page in dropped for k in (page, f"{page}|gzip")])
    cache.set(key, recent, settings.PAGE_CACHE_SECONDS)


def _path_key(scope: str, path: str) -> str:
    """:func:`page_key` of the request for ``path`` (as ``get_full_path`` gives it)."""
    from urllib.parse import unquote

    bare, _, query = path.partition("?")
    request = HttpRequest()
    request.path, request.GET = unquote(bare), QueryDict(query)
    return page_key(request, scope)


def recent_pages(scope: str) -> list[str]:
    """The paths (with their queries) of ``scope``'s pages that visitors read in the last
    ``PAGE_CACHE_SECONDS``, oldest first."""
    horizon = time.time() - settings.PAGE_CACHE_SECONDS
    recent: dict[str, float] = caches[settings.PAGE_CACHE_ALIAS].get(f"recent:{release()}:{scope}") or {}
    return [path for path, seen in sorted(recent.items(), key=lambda item: item[1]) if seen >= horizon]


def _stored_as_streamed(response: Any, store: Callable[[bytes], None]) -> None:
    """Let a streaming response go out as it is made and store what went out once all of it has
    (nothing when the client left early or it outgrew ``PAGE_CACHE_MAX_BYTES``)."""
    chunks: list[bytes] = []
    limit = settings.PAGE_CACHE_MAX_BYTES
    content = response.streaming_content

    def tee() -> Iterator[bytes]:
        size = 0
        for chunk in content:
            size += len(chunk)
            if size <= limit:
                chunks.append(chunk)
            yield chunk
        if size <= limit:
            store(b"".join(chunks))

    response.streaming_content = tee()


def _warming(cache: BaseCache, scope: str, version: str) -> bool:
    """Whether the site worker was asked to render ``scope`` at ``version`` less than
    ``PAGE_CACHE_STALE_SECONDS`` ago (the version's own time bounds it too)."""
    changed = version_time(version)
    if changed is None or not 0 <= time.time() - changed < settings.PAGE_CACHE_STALE_SECONDS:
        return False
    return cache.get(f"warming:{scope}") == version


def accepts_gzip(request: HttpRequest) -> bool:
    """Whether the request's Accept-Encoding takes gzip (named, or ``*``, without ``q=0``)."""
    for part in request.META.get("HTTP_ACCEPT_ENCODING", "").split(","):
        coding, _, params = part.partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            q = params.strip().lower().removeprefix("q=").strip()
            try:
                return not q or float(q) > 0
            except ValueError:
                return False
    return False


def _entry_key(request: HttpRequest, key: str) -> str:
    """Where the copy of page ``key`` this request gets is stored: the gzipped copy for a request
    that accepts gzip (browsers, httpx, curl --compressed), the plain one otherwise. Separate
    entries, so a hit reads from Redis only the bytes it sends (a JSON export: 42 kB, not 431)."""
    return f"{key}|gzip" if accepts_gzip(request) else key


def _from_entry(entry: dict, state: str, request: HttpRequest) -> HttpResponse:
    response = HttpResponse(entry["content"], content_type=entry["content_type"])
    if entry.get("encoding"):
        response["Content-Encoding"] = entry["encoding"]
    for name, value in entry["headers"].items():
        response[name] = value
    response["X-Page-Cache"] = state
    return response


def board_scope(request: HttpRequest, kwargs: dict[str, Any]) -> tuple[str, str] | None:
    """A board page's scope and version: the benchmark of its ``slug`` argument ("*" and every
    benchmark's version without one); None for an unknown benchmark (the view answers 404).
    The version comes from the cache (:func:`kept_version`), where the commit that changed it put
    it and every bump deleted it (boards/versions.py)."""
    slug = kwargs.get("slug")
    version = kept_version(request, slug or "*", f"version:{slug or '*'}", lambda: board_version(slug))
    return None if version is None else (slug or "*", version)


def submission_version_key(pk: int) -> str:
    """Where the version of submission ``pk``'s page is kept (submissions/views.py reads it,
    boards/versions.py forgets it)."""
    return f"submission-version:{pk}"


def kept_version(request: HttpRequest, scope: str, key: str, read: Callable[[], str | None]) -> str | None:
    """The version of the page ``scope`` this request asks for, kept in the cache under ``key``
    and read with the page itself in one round trip (the entry is left on the request for the
    wrapper). When the cache lacks it, ``read()`` gets it from the database (None: not a cached
    page, and nothing is kept) and it is kept for ``PAGE_CACHE_STALE_SECONDS``, which bounds how
    long a version can lag the database when a change does not delete it (a process dying between
    its commit and its on_commit callbacks, web processes with their own caches, an UPDATE no
    signal sees). So a cached page costs no query."""
    cache = caches[settings.PAGE_CACHE_ALIAS]
    page = _entry_key(request, page_key(request, scope))
    try:
        found = cache.get_many([key, page])
    except Exception:  # noqa: BLE001 - any cache backend failure: the database answers
        found = {}
    else:
        request.page_cache_entry = (page, found.get(page))  # type: ignore[attr-defined]
    version = found.get(key)
    if version is None:
        version = read()
        if version is None:
            return None
        try:
            cache.set(key, version, settings.PAGE_CACHE_STALE_SECONDS)
        except Exception:  # noqa: BLE001
            log.warning("page cache unavailable; version %s not kept", key, exc_info=True)
    return version


def cached_for_visitors(
    view: Callable[..., HttpResponseBase] | None = None,
    *,
    json_only: bool = False,
    scope: Callable[[HttpRequest, dict[str, Any]], tuple[str, str] | None] = board_scope,
) -> Any:
    """Serve ``view``'s anonymous GETs from the page cache and answer conditional requests.
    ``scope`` gives the page's scope and version (default :func:`board_scope`: the benchmark of
    the view's ``slug`` argument, or every benchmark without one), or None to leave the request
    to the view. ``json_only`` (API views): only requests that get JSON are cached.
    ``X-Page-Cache`` says what happened: hit, stale (the previous render, at most
    ``PAGE_CACHE_STALE_SECONDS`` after a change, while the site worker renders the new one) or
    miss (rendered for this visitor). The cache failing (Redis down) costs speed, never a page.
    Hits and 304s are answered earlier, before the session, CSRF and authentication middleware,
    by :func:`cached_answer` (boards/middleware.py), with the same bytes and headers.

    A request with the attribute ``page_cache_refresh`` (the warmer's) renders and stores the page
    unless the entry already holds the current version."""
    if view is None:
        return functools.partial(cached_for_visitors, json_only=json_only, scope=scope)

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method not in ("GET", "HEAD"):
            return view(request, *args, **kwargs)
        if not _anonymous(request):
            response = view(request, *args, **kwargs)
            patch_vary_headers(response, ("Cookie", "Authorization"))
            patch_cache_control(response, private=True)
            return response
        page = _page(request, kwargs, json_only=json_only, scope=scope)
        if page is None:
            return view(request, *args, **kwargs)
        key, name, version, etag = page
        not_modified = _not_modified(request, etag, version)
        if not_modified is not None:
            return _finish(not_modified)
        response = _cached_or_rendered(
            view, request, args, kwargs, key=key, scope=name, version=version, etag=etag
        )
        return _finish(response)

    # Read by cached_answer; it holds the wrapper itself, so a decorator around this one (whose
    # functools.wraps copies the attribute) is never skipped by the early answer.
    wrapper.page_cache = (wrapper, json_only, scope)  # type: ignore[attr-defined]
    return wrapper


def _page(
    request: HttpRequest,
    kwargs: dict[str, Any],
    *,
    json_only: bool,
    scope: Callable[[HttpRequest, dict[str, Any]], tuple[str, str] | None],
) -> tuple[str, str, str, str] | None:
    """The page's cache key, scope, version and ETag; None when it is not cached (the cache off,
    an API request that does not get JSON, a scope that leaves it to the view). Worked out once
    per request: the early answer's work is reused by the view's wrapper when it falls through."""
    if hasattr(request, "page_cache_page"):
        known: tuple[str, str, str, str] | None = request.page_cache_page
        return known
    page = None
    if settings.PAGE_CACHE_SECONDS > 0 and not (json_only and not _wants_json(request)):
        scoped = scope(request, kwargs)
        if scoped is not None:
            name, version = scoped
            key = page_key(request, name)
            page = (key, name, version, _etag(key, version))
    request.page_cache_page = page  # type: ignore[attr-defined]
    return page


def _not_modified(request: HttpRequest, etag: str, version: str) -> HttpResponseBase | None:
    modified = version_time(version)
    response = get_conditional_response(
        request, etag=etag, last_modified=int(modified) if modified is not None else None
    )
    if response is not None:
        _validators(response, etag, version)
    return response


def cached_answer(
    request: HttpRequest, view: Callable[..., Any], kwargs: dict[str, Any]
) -> HttpResponseBase | None:
    """The answer ``view`` (a :func:`cached_for_visitors` view, as URL resolution found it) would
    give this request when it can come straight from the cache: a 304 or a hit, for an anonymous
    GET or HEAD (no session or messages cookie, no Authorization: nothing that could make the page
    private). None for everything else (another view, a miss, a stale entry, a visitor who may be
    logged in, the cache failing), which the view's wrapper then answers as it always did."""
    marked = getattr(view, "page_cache", None)
    if (
        marked is None
        or marked[0] is not view
        or request.method not in ("GET", "HEAD")
        or not _without_credentials(request)
    ):
        return None
    _, json_only, scope = marked
    page = _page(request, kwargs, json_only=json_only, scope=scope)
    if page is None:
        return None
    key, _, version, etag = page
    not_modified = _not_modified(request, etag, version)
    if not_modified is not None:
        return _finish(not_modified)
    prefetched = getattr(request, "page_cache_entry", None)  # read with the version (board_scope)
    try:
        entry = (
            prefetched[1]
            if prefetched is not None and prefetched[0] == _entry_key(request, key)
            else caches[settings.PAGE_CACHE_ALIAS].get(_entry_key(request, key))
        )
    except Exception:  # noqa: BLE001 - any cache backend failure: the view's wrapper renders
        return None
    if entry is None or entry["version"] != version:
        return None
    return _finish(_from_entry(entry, "hit", request))


def _finish(response: HttpResponseBase) -> HttpResponseBase:
    """Headers every anonymous answer carries: browsers and proxies may keep it but must ask again
    (a 304 is cheap), and it differs for a visitor with a session or a token, and with the
    encodings the request accepts (a hit may be gzipped)."""
    patch_vary_headers(response, ("Cookie", "Authorization", "Accept-Encoding"))
    patch_cache_control(response, no_cache=True)
    # Last-Modified has whole seconds: sent within the version's own second, a later version of
    # that second would match it and a client asking If-Modified-Since would keep the old page
    # (a 304). So it goes out only once that second is over; the ETag tells versions apart always.
    modified = response.get("Last-Modified")
    if modified is not None and time.time() < parse_http_date(modified) + 1:
        del response["Last-Modified"]
    return response


def _cached_or_rendered(
    view: Callable[..., HttpResponseBase],
    request: HttpRequest,
    args: tuple,
    kwargs: dict[str, Any],
    *,
    key: str,
    scope: str,
    version: str,
    etag: str,
) -> HttpResponseBase:
    cache = caches[settings.PAGE_CACHE_ALIAS]
    refresh = getattr(request, "page_cache_refresh", False)
    prefetched = getattr(request, "page_cache_entry", None)  # read with the version (board_scope)
    try:
        stored = _entry_key(request, key)
        entry = prefetched[1] if prefetched is not None and prefetched[0] == stored else cache.get(stored)
    except Exception:  # noqa: BLE001 - any cache backend failure
        log.warning("page cache unavailable; rendering %s", request.path, exc_info=True)
        return view(request, *args, **kwargs)
    if entry is not None and entry["version"] == version:
        return _from_entry(entry, "hit", request)
    path = request.get_full_path()
    if entry is not None and not refresh:
        try:
            if _warming(cache, scope, version):  # until the worker's render is in, the one before it
                _remember(cache, scope, path)
                return _from_entry(entry, "stale", request)
        except Exception:  # noqa: BLE001 - any cache backend failure
            log.warning("page cache unavailable; rendering %s", path, exc_info=True)
    response = view(request, *args, **kwargs)
    if hasattr(response, "render") and callable(response.render):
        response.render()  # a DRF Response: its content is made here, once, as the handler would
    # A page that used a CSRF token is one visitor's: the CSRF middleware sets its cookie only
    # after this returns, so response.cookies alone does not show it.
    if response.status_code != 200 or response.cookies or request.META.get("CSRF_COOKIE_NEEDS_UPDATE"):
        return response
    _validators(response, etag, version)
    headers = {h: response[h] for h in (*KEPT_HEADERS, "ETag", "Last-Modified") if response.has_header(h)}

    def store(content: bytes) -> None:
        """The plain copy under ``key`` and, gzipped once here rather than for every visitor, the
        one for visitors who accept gzip (the plain bytes again when gzip would not shrink them)."""
        plain = {
            "version": version,
            "content": content,
            "content_type": response["Content-Type"],
            "headers": headers,
        }
        zipped = plain
        if not response.has_header("Content-Encoding"):
            compressed = compress_string(content)
            if len(compressed) < len(content):
                zipped = {**plain, "content": compressed, "encoding": "gzip"}
        try:
            cache.set_many({key: plain, f"{key}|gzip": zipped}, settings.PAGE_CACHE_SECONDS)
            if not refresh:
                _remember(cache, scope, path)
        except Exception:  # noqa: BLE001 - any cache backend failure
            log.warning("page cache unavailable; %s not stored", path, exc_info=True)

    if response.streaming:
        _stored_as_streamed(response, store)
    elif isinstance(response, HttpResponse) and len(response.content) <= settings.PAGE_CACHE_MAX_BYTES:
        store(response.content)
    else:
        return response  # too big to keep
    response["X-Page-Cache"] = "miss"
    return response
