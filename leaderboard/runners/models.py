from __future__ import annotations

import secrets
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from leaderboard.accounts.models import hash_token


class RunnerNode(models.Model):
    """A machine that evaluates jobs. It authenticates to the runner API with a hashed token."""

    name = models.CharField(max_length=100, unique=True)
    prefix = models.CharField(max_length=8, blank=True)
    token_hash = models.CharField(max_length=64, unique=True)
    pools = models.JSONField(default=list, blank=True, help_text='Pools it serves, e.g. ["cpu", "gpu"].')
    datasets = models.JSONField(
        default=list, blank=True,
        help_text='Datasets it reported holding: [{"name", "synthetic": bool|null, "checksum": str|null}].')
    device = models.CharField(max_length=120, blank=True, help_text='What evaluates, e.g. "cuda:0 NVIDIA H200".')
    version = models.CharField(max_length=50, blank=True)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def register(cls, *, name: str, pools: list[str]) -> tuple[RunnerNode, str]:
        node = cls(name=name, pools=pools)
        raw = node.set_new_token()
        node.save()
        return node, raw

    def set_new_token(self) -> str:
        """Give the node a new token (not saved); returns it, the only time it is seen."""
        raw = "rn_" + secrets.token_urlsafe(32)
        self.prefix, self.token_hash = raw[:8], hash_token(raw)
        return raw

    def rotate_token(self) -> str:
        raw = self.set_new_token()
        self.save(update_fields=["prefix", "token_hash"])
        return raw

    @property
    def dataset_names(self) -> set[str]:
        return {d["name"] for d in self.datasets or [] if isinstance(d, dict) and "name" in d}

    def holding(self, dataset: str) -> dict | None:
        """What this node reported of ``dataset`` ({"name", "synthetic", "checksum"}), or None."""
        return next((d for d in self.datasets or [] if isinstance(d, dict) and d.get("name") == dataset), None)

    @property
    def is_online(self) -> bool:
        if self.last_heartbeat is None:
            return False
        return timezone.now() - self.last_heartbeat < timedelta(seconds=settings.RUNNER_OFFLINE_AFTER_SECONDS)


class RegistrationCode(models.Model):
    """A one-time code an operator gives `runner register`; exchanged once for a runner token."""

    code_hash = models.CharField(max_length=64, unique=True)
    pools = models.JSONField(default=list)
    note = models.CharField(max_length=200, blank=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    runner = models.ForeignKey(RunnerNode, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"code for {', '.join(self.pools)} ({'used' if self.used_at else 'unused'})"

    @classmethod
    def issue(cls, *, pools: list[str], hours: int | None = None, note: str = "") -> tuple[RegistrationCode, str]:
        code = cls(pools=pools, note=note)
        raw = code.set_new_code(hours=hours)
        code.save()
        return code, raw

    def set_new_code(self, *, hours: int | None = None) -> str:
        """A new code (not saved), expiring after ``hours`` (default RUNNER_REGISTRATION_CODE_HOURS)
        unless an expiry is set already; returns it, the only time it is seen."""
        raw = secrets.token_urlsafe(12)
        hours = settings.RUNNER_REGISTRATION_CODE_HOURS if hours is None else hours
        self.code_hash = hash_token(raw)
        self.expires_at = self.expires_at or timezone.now() + timedelta(hours=hours)
        return raw
