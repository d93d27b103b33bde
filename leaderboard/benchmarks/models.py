from __future__ import annotations

import secrets
import time

from django.core.validators import RegexValidator
from django.db import models

# Task slugs are part of the contract (shared/PROTOCOLS.md) and carry dots: denoise-kodak-poisson0.01.
task_slug_validator = RegexValidator(r"^[a-z0-9][a-z0-9.-]*$", "lower-case letters, digits, '-' and '.'")


# A board version is the time of the change in milliseconds since the epoch (41 bits, good until
# 2039) above 21 random bits: unique as before, and the page cache can tell how old a change is
# (leaderboard/boards/cache.py serves the previous render for a few seconds after it).
BOARD_VERSION_RANDOM_BITS = 21


def new_board_version() -> int:
    """A board version no other state of any board has had (leaderboard/boards/cache.py): the
    current time in ms, shifted left by ``BOARD_VERSION_RANDOM_BITS``, plus random low bits."""
    return (time.time_ns() // 1_000_000) << BOARD_VERSION_RANDOM_BITS | secrets.randbits(BOARD_VERSION_RANDOM_BITS)


def board_version_time(version: int) -> float | None:
    """When ``version`` was made, in seconds since the epoch; None for a version that carries no
    plausible time (one made at random before versions carried it: before 2020 or in the future)."""
    seconds = (version >> BOARD_VERSION_RANDOM_BITS) / 1000
    return seconds if 1_577_836_800 <= seconds <= time.time() + 60 else None


class Benchmark(models.Model):
    """A leaderboard family: a submission goes to one benchmark and is evaluated on its tasks."""

    class Kind(models.TextChoices):
        CLASSIFIER = "classifier", "Image classifier"
        OPTIMIZER = "optimizer", "Optimizer"
        DENOISER = "denoiser", "Image denoiser"

    slug = models.SlugField(unique=True)
    title = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    description = models.TextField(blank=True)
    primary_metric = models.CharField(max_length=50)
    higher_is_better = models.BooleanField(default=True)
    position = models.PositiveIntegerField(default=0)
    is_active = models.BooleanField(default=True)
    leaders = models.JSONField(default=list, blank=True, editable=False,
                               help_text="Materialized top rows of the lead task, for the home page.")
    board_version = models.PositiveBigIntegerField(
        default=new_board_version, editable=False,
        help_text="Changed (to a random value) whenever a board row of this benchmark changes; part of "
                  "the page cache's keys.")

    class Meta:
        ordering = ["position", "slug"]

    def __str__(self) -> str:
        return self.title

    @property
    def lead_task(self) -> Task | None:
        tasks = list(self.tasks.all())
        return tasks[0] if tasks else None


class Task(models.Model):
    """One evaluation of a benchmark: a dataset, a protocol and the queue of runners that hold it."""

    slug = models.CharField(max_length=80, unique=True, validators=[task_slug_validator])
    benchmark = models.ForeignKey(Benchmark, on_delete=models.CASCADE, related_name="tasks")
    title = models.CharField(max_length=200)
    dataset = models.CharField(max_length=100, blank=True)
    params = models.JSONField(default=dict, blank=True)
    queue = models.CharField(max_length=50, default="runner.cpu")
    time_limit_s = models.PositiveIntegerField(default=600)
    primary_metric = models.CharField(max_length=50)
    higher_is_better = models.BooleanField(default=True)
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["benchmark__position", "position", "slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def direction_arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"
