"""CPU per cache hit in one process, and where it goes: each anonymous page kind of `make bench-web`
is read through the WSGI application (Django's handler and every middleware, no HTTP server) a
few hundred times once the shared cache holds it, and one kind can be run under cProfile.

Usage: python tests/bench/profile_hits.py [--hits 500] [--gzip] [--profile "export json"]
Reads the database `make bench-web` filled (BENCH_DATABASE_URL) and its Redis cache (BENCH_CACHE_URL).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import resource
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench import bench_web  # noqa: E402 - after the path


def environ(path: str, encodings: str) -> dict:
    """A WSGI environ for an anonymous GET of ``path``, as gunicorn builds it."""
    route, _, query = path.partition("?")
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": route,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "HTTP_HOST": "127.0.0.1:8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "HTTP_ACCEPT": "*/*",
        "HTTP_ACCEPT_ENCODING": encodings,
    }


def get(
    application: Callable[..., Iterable[bytes]], path: str, encodings: str
) -> tuple[str, dict[str, str], int]:
    """Status, headers and body size of one request, its body read and closed as a server does."""
    started: dict = {}

    def start_response(status: str, headers: list, exc_info: object = None) -> None:
        started.update(status=status, headers=dict(headers))

    body: Iterable[bytes] = application(environ(path, encodings), start_response)
    size = sum(len(chunk) for chunk in body)
    close = getattr(body, "close", None)
    if close is not None:
        close()
    return started["status"], started["headers"], size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hits", type=int, default=500, help="per page kind")
    parser.add_argument("--gzip", action="store_true", help="accept gzip, as browsers do")
    parser.add_argument("--profile", help="the page kind to run under cProfile (e.g. 'board')")
    args = parser.parse_args()
    os.environ.update(
        PAGE_CACHE_SECONDS="300",
        CACHE_URL=bench_web.CACHE_URL,
        DEBUG="0",
        LOG_LEVEL="WARNING",
        ALLOWED_HOSTS="127.0.0.1",
        DB_CONN_MAX_AGE="600",
    )
    bench_web.setup_django(shared_cache=True)
    from leaderboard.wsgi import application

    urls = bench_web.pages()
    encodings = "gzip, deflate" if args.gzip else ""
    for paths in urls.values():  # rendered or read once, then every request is a hit
        for path in paths:
            get(application, path, encodings)
    for name, paths in urls.items():
        before, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for i in range(args.hits):
            status, headers, size = get(application, paths[i % len(paths)], encodings)
        wall, after = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        print(
            f"{name:24} CPU {cpu * 1000 / args.hits:5.2f} ms a hit, wall {wall * 1000 / args.hits:5.2f} ms; "
            f"last: {status}, X-Page-Cache {headers.get('X-Page-Cache')}, {size} bytes "
            f"{headers.get('Content-Encoding', '')}"
        )
    if args.profile:
        paths = urls[args.profile]
        profile = cProfile.Profile()
        profile.enable()
        for i in range(args.hits):
            get(application, paths[i % len(paths)], encodings)
        profile.disable()
        pstats.Stats(profile).sort_stats("cumulative").print_stats(40)


if __name__ == "__main__":
    main()
