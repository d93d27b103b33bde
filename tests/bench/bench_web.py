"""`make bench-web`: page latency at scale. Fills a PostgreSQL database with 10,000 submissions
across the catalogue (with their jobs, results and board rows), serves the site with gunicorn, and
measures p50/p95 latency of the home, board, submission and export pages under concurrent clients.
It also counts the queries each page makes at two scales, to show they do not grow.

Usage: python tests/bench/bench_web.py [--submissions 10000] [--clients 8] [--requests 200]
Needs PostgreSQL (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/leaderboard_bench); measures
the site with its page cache off, per process, and shared through Redis (BENCH_CACHE_URL) when one answers.
"""
from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
DB_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/leaderboard_bench")
# A shared page cache is measured too when this Redis answers (BENCH_CACHE_URL).
CACHE_URL = os.environ.get("BENCH_CACHE_URL", "redis://127.0.0.1:6379/13")


def ensure_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def setup_django() -> None:
    os.environ["DATABASE_URL"] = DB_URL
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
        cursor.execute("TRUNCATE boards_boardentry, submissions_evaluationjob, submissions_submission CASCADE")
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
            subs.append(Submission(
                owner=users[i % len(users)], benchmark=bench, name=f"model-{i}", artifact=f"artifacts/x/{i}.pt",
                artifact_name=f"{i}.pt", artifact_format="torchscript", artifact_sha256=f"{i:064x}",
                artifact_size=1000 + i, status=Submission.Status.FINISHED, is_baseline=i % 97 == 0,
                model_family=rng.choice(["ResNet", "ViT", "ConvNeXt", "Adam-like", "SGD-like"]),
                created_at=now, finished_at=now))
        subs = Submission.objects.bulk_create(subs)
        jobs, entries = [], []
        for sub in subs:
            bench = next(b for b in benches if b.pk == sub.benchmark_id)
            for task in bench.tasks.all():
                metrics = {k: rng.uniform(10, 90) for k in required_metrics(task.slug)}
                ci = {task.primary_metric: [metrics[task.primary_metric] - 1, metrics[task.primary_metric] + 1]} \
                    if task.primary_metric in metrics else {}
                result = make_result(task.slug, metrics, ci95=ci, env={"bench": True}, timing={"wall_s": 1.0})
                jobs.append(EvaluationJob(submission=sub, task=task, state="succeeded", attempt=1, result=result,
                                          result_attempt=1, progress=1.0, claimed_at=now, finished_at=now))
                if task.primary_metric in metrics:
                    v = metrics[task.primary_metric]
                    entries.append(BoardEntry(
                        task=task, benchmark=bench, submission=sub, value=v, ci_low=v - 1, ci_high=v + 1,
                        metrics=metrics, ci95=ci, submission_name=sub.name, owner_name=sub.owner.username,
                        model_family=sub.model_family, is_baseline=sub.is_baseline, submitted_at=now))
        EvaluationJob.objects.bulk_create(jobs)
        BoardEntry.objects.bulk_create(entries)
    from leaderboard.boards.services import benchmark_leaders_refresh

    for bench in benches:
        benchmark_leaders_refresh(task=bench.tasks.all()[0])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(f"filled {n} submissions, {EvaluationJob.objects.count()} jobs, {BoardEntry.objects.count()} board rows "
          f"in {time.time() - t0:.1f} s")


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
        "api leaderboard": [f"/api/v1/benchmarks/{s}/leaderboard/" for s in slugs],
    }


def queries_per_page(urls: dict[str, list[str]]) -> dict[str, int]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    out = {}
    for name, paths in urls.items():
        counts = set()
        for path in paths[:5]:
            with CaptureQueriesContext(connection) as ctx:
                response = client.get(path)
            assert response.status_code == 200, (path, response.status_code)
            counts.add(len(ctx.captured_queries))
        out[name] = max(counts)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(base: str, paths: list[str], clients: int, requests: int) -> list[float]:
    import httpx

    latencies: list[float] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as client:
            for j in range(requests // clients):
                path = paths[(k * 7 + j) % len(paths)]
                t = time.perf_counter()
                response = client.get(path)
                elapsed = time.perf_counter() - t
                assert response.status_code == 200, (path, response.status_code)
                with lock:
                    latencies.append(elapsed * 1000)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def main() -> None:
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser()
    parser.add_argument("--submissions", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200, help="per page kind")
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()

    ensure_database(DB_URL)
    setup_django()
    fill(args.submissions)
    urls = pages()
    queries = queries_per_page(urls)

    configs = [("cache off", {"PAGE_CACHE_SECONDS": "0"}),
               ("per-process cache", {"PAGE_CACHE_SECONDS": "300"})]
    if redis_reachable(CACHE_URL):
        configs.append(("shared Redis cache", {"PAGE_CACHE_SECONDS": "300", "CACHE_URL": CACHE_URL}))
    results = {label: serve_and_measure(urls, args, extra) for label, extra in configs}
    print(f"\n{args.submissions} submissions, {args.clients} concurrent anonymous clients, gunicorn "
          f"{args.workers} workers × 2 threads, {os.cpu_count()} cores; one run, every configuration\n")
    print(f"{'page':24} {'queries':>7}" + "".join(f" | {label:>20} p50/p95 ms  req/s" for label, _ in configs)
          + " | p95 off ÷ best")
    for name in urls:
        line = f"{name:24} {queries[name]:7d}"
        for label, _ in configs:
            p50, p95, rps = results[label][name]
            line += f" | {p50:20.1f} {p95:7.1f} {rps:6.0f}"
        best = min(results[label][name][1] for label, _ in configs[1:])
        print(line + f" | {results['cache off'][name][1] / best:14.1f}")
    print("\nThe submission page and the API are never cached (live status; token users see private rows).")


def redis_reachable(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def serve_and_measure(urls: dict[str, list[str]], args: argparse.Namespace, extra_env: dict[str, str]
                      ) -> dict[str, tuple[float, float, float]]:
    """Start gunicorn with ``extra_env`` and measure every page kind: {name: (p50 ms, p95 ms, req/s)}."""
    import httpx

    port = free_port()
    env = {**os.environ, "DATABASE_URL": DB_URL, "DEBUG": "0", "ALLOWED_HOSTS": "127.0.0.1",
           "DB_CONN_MAX_AGE": "600", "LOG_LEVEL": "WARNING", **extra_env}
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "leaderboard.wsgi:application", "-b", f"127.0.0.1:{port}",
         "-w", str(args.workers), "--threads", "2", "-k", "gthread", "--log-level", "warning"],
        cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    out = {}
    try:
        for _ in range(100):
            try:
                httpx.get(base + "/", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        for name, paths in urls.items():
            measure(base, paths, args.clients, args.clients * 2)  # warm-up, not timed
            t = time.perf_counter()
            lat = measure(base, paths, args.clients, args.requests)
            wall = time.perf_counter() - t
            out[name] = (statistics.median(lat), statistics.quantiles(lat, n=20)[18], len(lat) / wall)
    finally:
        server.terminate()
        server.wait(10)
    return out


if __name__ == "__main__":
    main()
