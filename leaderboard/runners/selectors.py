from __future__ import annotations

from django.db.models import Count, Q

from leaderboard.submissions.models import EvaluationJob


def queue_depths() -> list[dict]:
    """Per queue: jobs waiting (pending or dispatched) and running."""
    rows = (
        EvaluationJob.objects.values("task__queue")
        .annotate(
            waiting=Count("pk", filter=Q(state__in=[EvaluationJob.State.PENDING, EvaluationJob.State.DISPATCHED])),
            running=Count("pk", filter=Q(state=EvaluationJob.State.RUNNING)),
        )
        .order_by("task__queue")
    )
    return [{"queue": r["task__queue"], "waiting": r["waiting"], "running": r["running"]} for r in rows]
