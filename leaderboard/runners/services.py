"""Writes for runner nodes: registration with a one-time code, and recording that a runner is
alive and what it reports of itself. A job's transitions (claim, heartbeat, result, failure)
are leaderboard.jobs.transitions'; the runner API views call both."""
from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from .models import RegistrationCode, RunnerNode


def runner_touch(*, runner: RunnerNode, version: str = "", report: dict[str, Any] | None = None) -> None:
    """Record that the runner is alive, with what it says of itself: ``report`` is the output of
    runner.spec.validate_node_report (its pools, device and datasets; None values are left as
    they were)."""
    fields: dict[str, Any] = {"last_heartbeat": timezone.now()}
    if version:
        fields["version"] = version[:50]
    for key, value in (report or {}).items():
        if value is not None:
            fields[key] = value
    RunnerNode.objects.filter(pk=runner.pk).update(**fields)


class RegistrationRefused(Exception):
    """A registration code that is unknown, used or expired."""


def runner_register(*, code: str, name: str) -> tuple[RunnerNode, str]:
    """Exchange a one-time registration code for a new runner's token (conditional update: a code
    works once, before it expires)."""
    from leaderboard.accounts.models import hash_token

    name = name.strip()[:100]
    if not name:
        raise RegistrationRefused("a runner name is required")
    now = timezone.now()
    with transaction.atomic():
        entry = RegistrationCode.objects.filter(code_hash=hash_token(code.strip()), used_at__isnull=True,
                                                expires_at__gt=now).first()
        if entry is None or not RegistrationCode.objects.filter(pk=entry.pk, used_at__isnull=True).update(used_at=now):
            raise RegistrationRefused("this registration code is unknown, used or expired; ask for a new one")
        if RunnerNode.objects.filter(name=name).exists():
            raise RegistrationRefused(f"a runner named {name!r} exists already; choose another name")
        node, token = RunnerNode.register(name=name, pools=entry.pools)
        RegistrationCode.objects.filter(pk=entry.pk).update(runner=node)
    return node, token
