"""gunicorn's settings for the site: the Dockerfile, the systemd unit and `make bench-web` all run
gunicorn with ``-c deploy/gunicorn.conf.py``, so the benchmark measures what production runs.
Each place gives only its own ``--bind``.

Measured on 2 cores with tests/bench/bench_web.py's clients (8 keep-alive connections, every page
a cache hit; server CPU per request from /proc, which other load on the host disturbs less than
latency): 2 workers × 4 threads took 0.8-1.2 ms of CPU per request and answered 750-1180 req/s;
3 × 2 0.9-1.5 ms and 540-1030 req/s; 4 × 4 1.0-1.5 ms; sync workers (no keep-alive) 2.4 ms and
about 200 req/s. One worker per core keeps the processes from taking turns on the cores; four
threads each let a request wait on Redis or PostgreSQL while another runs (a render holds its
worker's GIL, but two renders already fill two cores). WEB_CONCURRENCY (workers) and
GUNICORN_THREADS say otherwise; docs/operations.md says when to.
"""

from __future__ import annotations

import os


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores it may run on (a cpuset; a CPU quota is not seen)
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _positive(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise SystemExit(f"{name}={value!r}: a number of at least 1 was expected")
    return int(value)


# At most 4 by default: each worker holds its own Django (about 100 MB), and a container on a large
# host sees all its cores (a CPU quota is not seen); more traffic takes more replicas.
MAX_DEFAULT_WORKERS = 4
workers = _positive("WEB_CONCURRENCY", min(_cores(), MAX_DEFAULT_WORKERS))
threads = _positive("GUNICORN_THREADS", 4)
worker_class = "gthread"
timeout = 120  # an export of a large board renders in about 1 s; a stuck worker is replaced after 2 min
accesslog = "-"
