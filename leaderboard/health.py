"""Health, readiness and Prometheus metrics for operators and load balancers."""
from __future__ import annotations

import time

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection
from django.db.models import Count
from django.http import HttpResponse, JsonResponse
from django.utils import timezone


def healthz(request):
    """Liveness: the process answers. Never touches a dependency."""
    return JsonResponse({"status": "ok"})


def _check(name: str, probe) -> dict:
    started = time.perf_counter()
    try:
        probe()
    except Exception as exc:  # each dependency reports its own failure
        return {"name": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {"name": name, "ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _broker() -> None:
    from leaderboard.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=3)


def _storage() -> None:
    default_storage.exists("readyz-probe")


def readyz(request):
    """Readiness: the database, the broker and artifact storage all answer."""
    checks = [_check("database", _database), _check("broker", _broker), _check("storage", _storage)]
    ok = all(c["ok"] for c in checks)
    return JsonResponse({"status": "ready" if ok else "not ready", "checks": checks}, status=200 if ok else 503)


def metrics(request):
    """Prometheus text format: jobs by state, queue depth, runner heartbeats, job durations."""
    if settings.METRICS_TOKEN and request.headers.get("Authorization", "") != f"Bearer {settings.METRICS_TOKEN}":
        return HttpResponse("metrics need 'Authorization: Bearer <METRICS_TOKEN>'\n", status=401,
                            content_type="text/plain")
    from leaderboard.runners.models import RunnerNode
    from leaderboard.submissions.models import EvaluationJob, Submission

    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[dict, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label = ",".join(f'{k}="{str(v).replace(chr(34), "")}"' for k, v in labels.items())
            lines.append(f"{name}{{{label}}} {value}" if label else f"{name} {value}")

    jobs = EvaluationJob.objects.values("state", "task__queue").annotate(n=Count("pk"))
    metric("leaderboard_jobs", "gauge", "Evaluation jobs by state and queue.",
           [({"state": j["state"], "queue": j["task__queue"]}, j["n"]) for j in jobs])
    waiting = EvaluationJob.objects.filter(state__in=["pending", "dispatched"]).values("task__queue").annotate(n=Count("pk"))
    metric("leaderboard_queue_depth", "gauge", "Jobs waiting for a runner, per queue.",
           [({"queue": w["task__queue"]}, w["n"]) for w in waiting])
    subs = Submission.objects.values("status").annotate(n=Count("pk"))
    metric("leaderboard_submissions", "gauge", "Submissions by status.", [({"status": s["status"]}, s["n"]) for s in subs])
    now = timezone.now()
    nodes = RunnerNode.objects.filter(is_active=True).values("name", "last_heartbeat")
    metric("leaderboard_runner_heartbeat_age_seconds", "gauge", "Seconds since each runner's last heartbeat.",
           [({"runner": n["name"]}, round((now - n["last_heartbeat"]).total_seconds(), 1))
            for n in nodes if n["last_heartbeat"]])
    online = sum(1 for n in nodes if n["last_heartbeat"] and
                 (now - n["last_heartbeat"]).total_seconds() < settings.RUNNER_OFFLINE_AFTER_SECONDS)
    metric("leaderboard_runners_online", "gauge", "Runners that sent a heartbeat recently.", [({}, online)])
    # Durations of the last 1,000 finished jobs, as a histogram per task queue.
    buckets = [10, 30, 60, 300, 900, 3600, 4 * 3600, float("inf")]
    recent = (EvaluationJob.objects.filter(state="succeeded", claimed_at__isnull=False, finished_at__isnull=False)
              .order_by("-finished_at").values_list("task__queue", "claimed_at", "finished_at")[:1000])
    per_queue: dict[str, list[float]] = {}
    for queue, started, ended in recent:
        per_queue.setdefault(queue, []).append((ended - started).total_seconds())
    lines.append("# HELP leaderboard_job_duration_seconds Wall time of recent successful jobs.")
    lines.append("# TYPE leaderboard_job_duration_seconds histogram")
    for queue, durations in per_queue.items():
        for bound in buckets:
            le = "+Inf" if bound == float("inf") else str(bound)
            lines.append(f'leaderboard_job_duration_seconds_bucket{{queue="{queue}",le="{le}"}} '
                         f"{sum(1 for d in durations if d <= bound)}")
        lines.append(f'leaderboard_job_duration_seconds_sum{{queue="{queue}"}} {round(sum(durations), 3)}')
        lines.append(f'leaderboard_job_duration_seconds_count{{queue="{queue}"}} {len(durations)}')
    return HttpResponse("\n".join(lines) + "\n", content_type="text/plain; version=0.0.4")
