"""Board versions, written: every change to a board row, task or benchmark bumps its benchmark's
version in the same transaction (the signals below, and the services that update rows in bulk
call :func:`bump`). The bump forgets the version kept in the page cache, and after the commit the
new versions go into the cache and the site worker is asked to warm the changed boards
(boards/tasks.py → boards/warming.py). Reading versions and serving pages is boards/cache.py."""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from django.conf import settings
from django.core.cache import caches
from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver

from leaderboard.benchmarks.models import Benchmark, Task, new_board_version
from leaderboard.celery import app
from leaderboard.submissions.models import EvaluationJob, Submission

from .cache import board_version, submission_version_key
from .models import BoardEntry

log = logging.getLogger(__name__)

_pending = threading.local()


def bump(benchmark_ids: Iterable[int], *, hides: bool = False) -> None:
    """Mark these benchmarks' boards as changed: their cached pages (and the home page) are stale,
    and once the transaction commits the warmer renders them again. The new version is the time
    plus random bits (``new_board_version``), so no version ever comes back — not after a restore
    from backup, nor in a database created afresh — and concurrent bumps need no lock.
    ``hides``: the change takes rows out of visitors' sight (made private, deleted), so no render
    from before it may be served while the worker renders (:func:`_hide`)."""
    ids = sorted(set(benchmark_ids))
    if ids:
        Benchmark.objects.filter(pk__in=ids).update(board_version=new_board_version())
        slugs = list(Benchmark.objects.filter(pk__in=ids).values_list("slug", flat=True))
        if hides:
            _hide(slugs)
        _forget_versions(slugs)  # this process (and, shared, every other) reads the database again
        pending = _pending.__dict__.setdefault("ids", set())
        pending.update(ids)
        transaction.on_commit(_send_warm)


def _hide(slugs: Iterable[str]) -> None:
    """No stale answer for these boards (and the home page) for ``PAGE_CACHE_SECONDS``, as long
    as an entry rendered before the change may live: the previous render shows rows that are
    hidden now, and a later change's warm would otherwise let it out again. Set before the commit,
    so no warm sent meanwhile, by any process, misses it. Visitors render for themselves instead."""
    try:
        caches[settings.PAGE_CACHE_ALIAS].set_many(
            {f"hidden:{scope}": True for scope in (*slugs, "*")}, max(settings.PAGE_CACHE_SECONDS, 1)
        )
    except Exception:  # noqa: BLE001 - a cache that fails serves nothing stale either
        log.warning("page cache unavailable; boards %s not marked as hiding rows", list(slugs), exc_info=True)


def _forget_versions(slugs: Iterable[str]) -> None:
    """Even with the page cache off: it may be turned on again while a version it kept is recent."""
    try:
        caches[settings.PAGE_CACHE_ALIAS].delete_many([f"version:{slug}" for slug in (*slugs, "*")])
    except Exception:  # noqa: BLE001 - any cache backend failure: the versions expire on their own
        log.warning("page cache unavailable; versions of %s not forgotten", list(slugs), exc_info=True)


def _send_warm() -> None:
    """Ask the site worker to warm every board bumped since the last send: one task per commit,
    however many rows it changed (the first on_commit callback takes them all; the rest find
    nothing). Sending must never fail the commit that changed the board: a broker that is down
    costs visitors a render, not a result."""
    ids = sorted(_pending.__dict__.pop("ids", set()))
    if not ids or settings.PAGE_CACHE_SECONDS <= 0:
        return
    # The committed versions, for visitors to read without the database, and as the versions of
    # which visitors may get the previous render while the worker renders.
    versions = {slug: str(version) for slug, version
                in Benchmark.objects.filter(pk__in=ids).values_list("slug", "board_version")}
    versions["*"] = board_version(None) or ""
    try:
        cache = caches[settings.PAGE_CACHE_ALIAS]
        hidden = {key.split(":", 1)[1] for key in cache.get_many([f"hidden:{scope}" for scope in versions])}
        cache.set_many(
            {
                f"{kind}:{scope}": version
                for scope, version in versions.items()
                for kind in ("warming", "version")
                if kind == "version" or scope not in hidden
            },
            settings.PAGE_CACHE_STALE_SECONDS,
        )
    except Exception:  # noqa: BLE001 - any cache backend failure: visitors render for themselves
        log.warning("page cache unavailable; boards %s not marked as warming", ids, exc_info=True)
    try:
        # By name: boards/tasks.py (imported by BoardsConfig.ready) calls back into the boards.
        app.tasks["leaderboard.warm_boards"].delay(ids)
    except Exception:  # noqa: BLE001 - any broker failure
        log.warning("could not ask the site worker to warm boards %s", ids, exc_info=True)


@receiver(post_save, sender=BoardEntry)
def _entry_changed(sender, instance: BoardEntry, **kwargs) -> None:
    bump([instance.benchmark_id])


@receiver(post_delete, sender=BoardEntry)
def _entry_deleted(sender: type[BoardEntry], instance: BoardEntry, **kwargs: object) -> None:
    bump([instance.benchmark_id], hides=instance.is_public)


@receiver(pre_save, sender=Task)
def _task_moving(sender, instance: Task, **kwargs) -> None:
    """A task moved to another benchmark leaves the old one's pages stale too."""
    if instance.pk is not None:
        old = Task.objects.filter(pk=instance.pk).values_list("benchmark_id", flat=True).first()
        if old is not None and old != instance.benchmark_id:
            bump([old])


@receiver([post_save, post_delete], sender=Task)
def _task_changed(sender, instance: Task, **kwargs) -> None:
    bump([instance.benchmark_id])


@receiver(post_save, sender=Benchmark)
def _benchmark_changed(sender, instance: Benchmark, **kwargs) -> None:
    bump([instance.pk])


def forget_submission_pages(submission_ids: Iterable[int]) -> None:
    """The pages of these submissions changed: forget their kept versions now and again after the
    commit (a visitor between the two reads the database before the commit and keeps what it read),
    so the next visitor reads the new version. A change no signal sees (a conditional UPDATE: a
    claim, a requeue, a cancel) shows once the kept version expires, within
    ``PAGE_CACHE_STALE_SECONDS``; the page's live status is polled anyway."""
    keys = [submission_version_key(pk) for pk in set(submission_ids)]

    def forget() -> None:
        try:
            caches[settings.PAGE_CACHE_ALIAS].delete_many(keys)
        except Exception:  # noqa: BLE001 - any cache backend failure: the versions expire on their own
            log.warning("page cache unavailable; submission page versions %s not forgotten", keys, exc_info=True)

    forget()
    transaction.on_commit(forget)


@receiver([post_save, post_delete], sender=Submission)
def _submission_changed(sender: type[Submission], instance: Submission, **kwargs: object) -> None:
    forget_submission_pages([instance.pk])


@receiver([post_save, post_delete], sender=EvaluationJob)
def _job_changed(sender: type[EvaluationJob], instance: EvaluationJob, **kwargs: object) -> None:
    forget_submission_pages([instance.submission_id])
