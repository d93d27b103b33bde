"""System checks on the site's settings: what `manage.py check` (and so runserver, migrate and
every deploy's `check --deploy`) refuses to start with. Registered by RunnersConfig.ready().

Ids: ``leaderboard.E001`` the job lease is shorter than two heartbeat intervals.
"""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register

JOB_LEASE_TOO_SHORT = "leaderboard.E001"


@register("leaderboard")
def job_lease_covers_two_heartbeats(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """An Error when JOB_LEASE_SECONDS < 2 × JOB_HEARTBEAT_SECONDS (both seconds): a runner renews
    its lease once per heartbeat, so with a shorter lease one late or retried heartbeat lets the
    reaper take a healthy runner's job and hand it to another."""
    lease, beat = settings.JOB_LEASE_SECONDS, settings.JOB_HEARTBEAT_SECONDS
    if lease >= 2 * beat:
        return []
    return [Error(
        f"JOB_LEASE_SECONDS ({lease}) is shorter than two heartbeats (JOB_HEARTBEAT_SECONDS {beat} × 2 = {2 * beat})",
        hint="One late heartbeat would lose a healthy runner its job: set JOB_LEASE_SECONDS to at least twice "
             "JOB_HEARTBEAT_SECONDS (the defaults are 120 and 20).",
        id=JOB_LEASE_TOO_SHORT,
    )]
