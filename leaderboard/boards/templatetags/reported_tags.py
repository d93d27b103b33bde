"""Reported results under a task's board: published claims, apart from the verified ranking."""
from __future__ import annotations

from typing import Any

from django import template
from django.db.models.functions import Lower

from leaderboard.benchmarks.models import Task
from leaderboard.boards.models import BoardEntry, ReportedResult

register = template.Library()


@register.inclusion_tag("boards/partials/_reported.html")
def reported_claims(task: Task) -> dict[str, Any]:
    """The task's imported claims, best first, each with the best public verified row of the same
    name (any case) and the difference verified − claimed. Two queries; none when there are no claims."""
    claims = list(ReportedResult.objects.filter(task=task).order_by("-value" if task.higher_is_better else "value",
                                                                     "model_name"))
    if not claims:
        return {"items": [], "task": task}
    names = {c.model_name.lower() for c in claims}
    best: dict[str, BoardEntry] = {}
    order = "-value" if task.higher_is_better else "value"
    for entry in (BoardEntry.objects.annotate(lname=Lower("submission_name"))
                  .filter(task=task, is_public=True, lname__in=names).order_by(order)
                  .only("submission_id", "submission_name", "value")):
        best.setdefault(entry.submission_name.lower(), entry)
    items = []
    for claim in claims:
        verified = best.get(claim.model_name.lower())
        items.append({"claim": claim, "verified": verified,
                      "difference": verified.value - claim.value if verified else None})
    return {"items": items, "task": task}
