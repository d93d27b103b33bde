"""`make bench-web`: page latency at scale. Fills a PostgreSQL database with 10,000 submissions
across the catalogue (with their jobs, results and board rows), serves the site with gunicorn, and
measures p50/p95 latency and requests/s of every anonymous page kind (home, boards, submission,
exports, API leaderboard) under concurrent clients, with the page cache off and on, each twice:
calm, and while results keep arriving (a board changes every second, through the same signal,
commit and site-worker warm a real result takes). It also counts the queries each page makes, and
the CPU each request costs the server (gunicorn's processes, from /proc) and the clients: figures
that other work on the host disturbs far less than latency, and that give the server's capacity.
gunicorn runs deploy/gunicorn.conf.py, as production does; the clients are separate processes with
one keep-alive connection each (http.client: a fraction of httpx's CPU per request), accepting
gzip as browsers do, so the load generator takes as little of the cores the server shares with it
as it can.

Usage: python tests/bench/bench_web.py [--submissions 10000] [--clients 8] [--requests 200]
       [--cached-requests 1000] [--change-every 1] [--workers N] [--threads N]
Needs PostgreSQL (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/leaderboard_bench). The
cache is shared through Redis (BENCH_CACHE_URL) with a site worker on BENCH_BROKER_URL warming it,
when that Redis answers; otherwise each web process keeps its own (correct, never warmed).
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import multiprocessing
import multiprocessing.pool
import os
import random
import resource
import runpy
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
DB_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/leaderboard_bench")
# A shared page cache is measured too when this Redis answers (BENCH_CACHE_URL).
CACHE_URL = os.environ.get("BENCH_CACHE_URL", "redis://127.0.0.1:6379/13")
# The site worker's broker (it warms the shared cache after each board change).
BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/12")
GUNICORN_CONFIG = ROOT / "deploy" / "gunicorn.conf.py"  # what production runs
# What browsers (and httpx, the earlier client) send: the cache's gzipped copy is what they get.
CLIENT_HEADERS = {"Accept-Encoding": "gzip, deflate"}


@dataclasses.dataclass
class Measured:
    """One page kind in one run: latency in ms, requests/s, X-Page-Cache counts, and CPU ms per
    request of the server (gunicorn's processes, from /proc) and of the clients. CPU per request
    hardly depends on what else the host runs; cores ÷ server CPU per request is the capacity."""

    p50: float
    p95: float
    rps: float
    outcomes: dict[str, int]
    server_cpu_ms: float
    client_cpu_ms: float


def ensure_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def setup_django(shared_cache: bool) -> None:
    """Django for the filler and the writer; with the shared cache and broker of the measured site,
    so a board change here is warmed there as a real result's would be."""
    os.environ["DATABASE_URL"] = DB_URL
    if shared_cache:
        os.environ["CACHE_URL"] = CACHE_URL
        os.environ["CELERY_BROKER_URL"] = BROKER_URL
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "leaderboard.settings")
    import django

    django.setup()


def fill(n: int) -> None:
    """Bulk-create n finished submissions (all public), spread over the catalogue's benchmarks."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from leaderboard.benchmarks.models import Benchmark
    from leaderboard.boards.models import BoardEntry
    from leaderboard.submissions.models import EvaluationJob, Submission
    from runner.catalogue import required_metrics
    from runner.spec import make_result

    call_command("migrate", verbosity=0)
    have = Submission.objects.count()
    if have >= n:
        print(f"database already holds {have} submissions")
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE boards_boardentry, submissions_evaluationjob, submissions_submission CASCADE"
        )
    users = [get_user_model().objects.get_or_create(username=f"researcher{i}")[0] for i in range(50)]
    benches = list(Benchmark.objects.prefetch_related("tasks"))
    rng = random.Random(0)
    now = timezone.now()
    t0 = time.time()
    batch = 1000
    for start in range(0, n, batch):
        subs = []
        for i in range(start, min(n, start + batch)):
            bench = benches[i % len(benches)]
            subs.append(
                Submission(
                    owner=users[i % len(users)],
                    benchmark=bench,
                    name=f"model-{i}",
                    artifact=f"artifacts/x/{i}.pt",
                    artifact_name=f"{i}.pt",
                    artifact_format="torchscript",
                    artifact_sha256=f"{i:064x}",
                    artifact_size=1000 + i,
                    status=Submission.Status.FINISHED,
                    is_baseline=i % 97 == 0,
                    model_family=rng.choice(["ResNet", "ViT", "ConvNeXt", "Adam-like", "SGD-like"]),
                    created_at=now,
                    finished_at=now,
                )
            )
        subs = Submission.objects.bulk_create(subs)
        jobs, entries = [], []
        for sub in subs:
            bench = next(b for b in benches if b.pk == sub.benchmark_id)
            for task in bench.tasks.all():
                metrics = {k: rng.uniform(10, 90) for k in required_metrics(task.slug)}
                ci = (
                    {
                        task.primary_metric: [
                            metrics[task.primary_metric] - 1,
                            metrics[task.primary_metric] + 1,
                        ]
                    }
                    if task.primary_metric in metrics
                    else {}
                )
                result = make_result(task.slug, metrics, ci95=ci, env={"bench": True}, timing={"wall_s": 1.0})
                jobs.append(
                    EvaluationJob(
                        submission=sub,
                        task=task,
                        state="succeeded",
                        attempt=1,
                        result=result,
                        result_attempt=1,
                        progress=1.0,
                        claimed_at=now,
                        finished_at=now,
                    )
                )
                if task.primary_metric in metrics:
                    v = metrics[task.primary_metric]
                    entries.append(
                        BoardEntry(
                            task=task,
                            benchmark=bench,
                            submission=sub,
                            value=v,
                            ci_low=v - 1,
                            ci_high=v + 1,
                            metrics=metrics,
                            ci95=ci,
                            submission_name=sub.name,
                            owner_name=sub.owner.username,
                            model_family=sub.model_family,
                            is_baseline=sub.is_baseline,
                            submitted_at=now,
                        )
                    )
        EvaluationJob.objects.bulk_create(jobs)
        BoardEntry.objects.bulk_create(entries)
    from leaderboard.boards.services import benchmark_leaders_refresh

    for bench in benches:
        benchmark_leaders_refresh(task=bench.tasks.all()[0])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(
        f"filled {n} submissions, {EvaluationJob.objects.count()} jobs, {BoardEntry.objects.count()} board rows "
        f"in {time.time() - t0:.1f} s"
    )


def pages() -> dict[str, list[str]]:
    from leaderboard.benchmarks.models import Benchmark
    from leaderboard.submissions.models import Submission

    ids = list(Submission.objects.order_by("?").values_list("pk", flat=True)[:50])
    slugs = list(Benchmark.objects.values_list("slug", flat=True))
    return {
        "home": ["/"],
        "board": [f"/b/{s}/" for s in slugs],
        "board (sorted, page 3)": [f"/b/{s}/?sort=submitted_at&dir=asc&offset=100" for s in slugs],
        "submission": [f"/s/{i}/" for i in ids],
        "export csv": [f"/b/{s}/export.csv" for s in slugs],
        "export json": [f"/b/{s}/export.json" for s in slugs],
        "api leaderboard": [f"/api/v1/benchmarks/{s}/leaderboard/" for s in slugs],
    }


def queries_per_page(urls: dict[str, list[str]]) -> dict[str, int]:
    """The most queries a render of each page kind makes (the cache off), over five of its pages."""
    from django.conf import settings
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    out = {}
    cached, settings.PAGE_CACHE_SECONDS = settings.PAGE_CACHE_SECONDS, 0
    try:
        for name, paths in urls.items():
            counts = set()
            for path in paths[:5]:
                with CaptureQueriesContext(connection) as ctx:
                    response = client.get(path)
                    response.getvalue()  # a streamed export makes its queries as it streams
                assert response.status_code == 200, (path, response.status_code)
                counts.add(len(ctx.captured_queries))
            out[name] = max(counts)
    finally:
        settings.PAGE_CACHE_SECONDS = cached
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _client(job: tuple[str, int, list[str], int, int]) -> tuple[list[float], dict[str, int], float]:
    """One client (run in its own process): ``count`` GETs over one keep-alive connection, as a
    browser reads pages. Returns its latencies in ms, how the page cache answered (X-Page-Cache;
    "-" when the cache was not asked) and the CPU seconds it spent."""
    host, port, paths, k, count = job
    latencies: list[float] = []
    outcomes: dict[str, int] = {}
    before = resource.getrusage(resource.RUSAGE_SELF)
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        for j in range(count):
            path = paths[(k * 7 + j) % len(paths)]
            t = time.perf_counter()
            connection.request("GET", path, headers=CLIENT_HEADERS)
            response = connection.getresponse()
            response.read()
            latencies.append((time.perf_counter() - t) * 1000)
            if response.status != 200:
                raise AssertionError(f"{path} answered {response.status}")
            state = response.getheader("X-Page-Cache", "-")
            outcomes[state] = outcomes.get(state, 0) + 1
    finally:
        connection.close()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return latencies, outcomes, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def measure(
    pool: multiprocessing.pool.Pool, base: str, paths: list[str], clients: int, requests: int
) -> tuple[list[float], dict[str, int], float]:
    """``requests`` GETs of ``paths`` from ``clients`` client processes (one keep-alive connection
    each; processes, not threads, so the load generator's own Python does not serialise the clients
    on one GIL): their latencies in ms, how the page cache answered them and the clients' CPU seconds."""
    url = urlsplit(base)
    jobs = [
        (url.hostname or "127.0.0.1", url.port or 80, paths, k, requests // clients) for k in range(clients)
    ]
    latencies: list[float] = []
    outcomes: dict[str, int] = {}
    cpu = 0.0
    for lat, states, seconds in pool.map(_client, jobs, chunksize=1):
        latencies += lat
        cpu += seconds
        for state, n in states.items():
            outcomes[state] = outcomes.get(state, 0) + n
    return latencies, outcomes, cpu


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its living descendants, from /proc."""
    total, ticks = 0.0, os.sysconf("SC_CLK_TCK")
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            pending += [int(c) for c in Path(f"/proc/{current}/task/{current}/children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):  # it ended meanwhile
            continue
    return total


class BoardWriter(threading.Thread):
    """Results keep arriving: every ``period`` seconds one board row changes (benchmarks in turn,
    a random row, its primary metric), saved in a transaction as the aggregation saves it, so the
    board's version is bumped by the same signal and, after the commit, the site worker is asked
    to warm it."""

    def __init__(self, period: float):
        super().__init__(daemon=True)
        self.period, self.changes = period, 0
        self.stop = threading.Event()

    def run(self) -> None:
        from django.db import connection, transaction

        from leaderboard.benchmarks.models import Benchmark
        from leaderboard.boards.models import BoardEntry

        rng = random.Random(1)
        benches = list(Benchmark.objects.order_by("pk").values_list("pk", flat=True))
        try:
            while not self.stop.wait(self.period):
                bench = benches[self.changes % len(benches)]
                with transaction.atomic():
                    entry = BoardEntry.objects.filter(benchmark_id=bench).order_by("?").first()
                    if entry is not None:
                        entry.value = rng.uniform(10, 90)
                        entry.save(update_fields=["value"])
                self.changes += 1
        finally:
            connection.close()


def gunicorn_shape(args: argparse.Namespace) -> tuple[int, int]:
    """Workers and threads gunicorn runs: deploy/gunicorn.conf.py's (it reads the same environment),
    unless --workers or --threads say otherwise."""
    config = runpy.run_path(str(GUNICORN_CONFIG))
    return args.workers or config["workers"], args.threads or config["threads"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--submissions", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200, help="per page kind, cache off")
    parser.add_argument(
        "--cached-requests",
        type=int,
        default=1000,
        help="per page kind with the cache: at hundreds a second, 200 take under a second, and "
        "the run with writes would see a change or two",
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="gunicorn workers (default: deploy/gunicorn.conf.py's)"
    )
    parser.add_argument("--threads", type=int, default=0, help="threads per worker (default: the config's)")
    parser.add_argument("--change-every", type=float, default=1.0, help="seconds between board changes")
    args = parser.parse_args()

    shared = redis_reachable(CACHE_URL) and redis_reachable(BROKER_URL)
    ensure_database(DB_URL)
    setup_django(shared)
    fill(args.submissions)
    urls = pages()
    queries = queries_per_page(urls)

    cache_on = (
        {"PAGE_CACHE_SECONDS": "300", "CACHE_URL": CACHE_URL, "CELERY_BROKER_URL": BROKER_URL}
        if shared
        else {"PAGE_CACHE_SECONDS": "300"}
    )
    label_on = "shared cache" if shared else "per-process cache"
    runs = [
        ("cache off", {"PAGE_CACHE_SECONDS": "0"}, False),
        ("cache off, writes", {"PAGE_CACHE_SECONDS": "0"}, True),
        (label_on, cache_on, False),
        (f"{label_on}, writes", cache_on, True),
    ]
    results: dict[str, dict[str, Measured]] = {}
    changes: dict[str, int] = {}
    load_before = os.getloadavg()[0]  # the host's other work: every figure waits for a core behind it
    # The clients: processes started afresh (spawn: no copy of this process's threads and connections).
    with multiprocessing.get_context("spawn").Pool(args.clients) as pool:
        for label, extra, writes in runs:
            results[label], changes[label] = serve_and_measure(
                urls, args, extra, pool, writes=writes, worker=shared and extra["PAGE_CACHE_SECONDS"] != "0"
            )
    workers, threads = gunicorn_shape(args)
    cores = len(os.sched_getaffinity(0))
    print(
        f"\n{args.submissions} submissions, {args.clients} concurrent anonymous clients (one process and one "
        f"keep-alive connection each), gunicorn {workers} workers × {threads} threads (deploy/gunicorn.conf.py), "
        f"{cores} cores, {args.requests} requests per page kind with the cache off, {args.cached_requests} with it; "
        f"'writes': a board changes every {args.change_every:g} s while clients read "
        f"({', '.join(f'{changes[label]} changes in {label!r}' for label, _, w in runs if w)}); one run; "
        f"host load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after\n"
    )
    print(
        f"{'page':24} {'queries':>7}"
        + "".join(f" | {label:>26}: p50 / p95 ms, p95÷p50, req/s" for label, _, _ in runs)
    )
    for name in urls:
        line = f"{name:24} {queries[name]:7d}"
        for label, _, _ in runs:
            m = results[label][name]
            line += f" | {m.p50:33.1f} {m.p95:6.1f} {m.p95 / m.p50:7.1f} {m.rps:6.0f}"
        print(line)
    print(
        f"\nCPU ms per request, server (gunicorn's processes) / clients, and the server's capacity on {cores} "
        "cores (cores ÷ server CPU per request, req/s): load-independent, unlike the latencies above"
    )
    print(f"{'page':24}" + "".join(f" | {label:>26}: server / client, capacity" for label, _, _ in runs))
    for name in urls:
        line = f"{name:24}"
        for label, _, _ in runs:
            m = results[label][name]
            line += f" | {m.server_cpu_ms:35.2f} {m.client_cpu_ms:6.2f} {cores * 1000 / max(m.server_cpu_ms, 1e-3):9.0f}"
        print(line)
    print(
        "\nHow the cache answered (X-Page-Cache: hit, stale = the previous render while the worker renders, "
        "miss = rendered for the visitor):"
    )
    for name in urls:
        print(
            f"{name:24} "
            + " | ".join(
                f"{label}: {results[label][name].outcomes}"
                for label, _, _ in runs
                if label not in ("cache off", "cache off, writes")
            )
        )


def redis_reachable(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def start_site_worker(env: dict[str, str]) -> subprocess.Popen:
    """The site's Celery worker (queue "site"), as `make demo` starts it; waits until it answers a ping."""
    from leaderboard.celery import app

    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "leaderboard",
            "worker",
            "-Q",
            "site",
            "-c",
            "1",
            "--loglevel",
            "WARNING",
            "-n",
            f"bench-web-{os.getpid()}@%h",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
    )  # its banner; warnings and errors still show
    for _ in range(60):
        if app.control.ping(timeout=0.5):
            return worker
        if worker.poll() is not None:
            raise SystemExit("the site worker exited at start")
    raise SystemExit("the site worker did not answer within 30 s")


def serve_and_measure(
    urls: dict[str, list[str]],
    args: argparse.Namespace,
    extra_env: dict[str, str],
    pool: multiprocessing.pool.Pool,
    *,
    writes: bool,
    worker: bool,
) -> tuple[dict[str, Measured], int]:
    """Start gunicorn with production's configuration and ``extra_env`` (and the site worker when
    ``worker``), read every page once, then measure every page kind, with a board changing every
    ``--change-every`` s when ``writes``: ({name: Measured}, board changes made)."""
    from django.conf import settings

    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": DB_URL,
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "DB_CONN_MAX_AGE": "600",
        "LOG_LEVEL": "WARNING",
        **extra_env,
    }
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "leaderboard.wsgi:application",
        "-c",
        str(GUNICORN_CONFIG),
        "-b",
        f"127.0.0.1:{port}",
    ]
    if args.workers:
        command += ["--workers", str(args.workers)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)  # stdout: the access log
    site_worker = start_site_worker(env) if worker else None
    settings.PAGE_CACHE_SECONDS = int(extra_env["PAGE_CACHE_SECONDS"])  # the writer's warm requests follow it
    base = f"http://127.0.0.1:{port}"
    out = {}
    writer = BoardWriter(args.change_every)
    try:
        for _ in range(100):
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", "/")
                connection.getresponse().read()
                connection.close()
                break
            except OSError:
                time.sleep(0.2)
        for paths in urls.values():  # warm-up, not timed: every page read once, as on a site in use
            measure(pool, base, paths, 1, len(paths))
        if writes:
            writer.start()
        for name, paths in urls.items():
            measure(pool, base, paths, args.clients, args.clients * 2)  # warm-up, not timed
            server_cpu = process_tree_cpu(server.pid)
            t = time.perf_counter()
            requests = args.requests if extra_env["PAGE_CACHE_SECONDS"] == "0" else args.cached_requests
            lat, outcomes, client_cpu = measure(pool, base, paths, args.clients, requests)
            wall = time.perf_counter() - t
            server_cpu = process_tree_cpu(server.pid) - server_cpu
            out[name] = Measured(
                p50=statistics.median(lat),
                p95=statistics.quantiles(lat, n=20)[18],
                rps=len(lat) / wall,
                outcomes=outcomes,
                server_cpu_ms=server_cpu * 1000 / len(lat),
                client_cpu_ms=client_cpu * 1000 / len(lat),
            )
    finally:
        writer.stop.set()
        if writer.is_alive():
            writer.join(10)
        server.terminate()
        server.wait(10)
        if site_worker is not None:
            site_worker.terminate()
            site_worker.wait(30)
    return out, writer.changes


if __name__ == "__main__":
    main()
