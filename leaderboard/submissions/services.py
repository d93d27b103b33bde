"""Writes for submissions: create, validate, dispatch, aggregate. Views, API and tasks call these;
the rules live here (DESIGN.md "Lifecycle")."""
from __future__ import annotations

import ast
import hashlib
import logging
import unicodedata
from dataclasses import dataclass
from datetime import timedelta
from pathlib import PurePath
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from leaderboard.benchmarks.models import Benchmark
from leaderboard.text import find_unstorable
from runner.spec import (
    BUILTIN_FORMAT,
    BUILTIN_MAX_BYTES,
    EVALUATE_TASK_NAME,
    MODEL_HPARAM_KEYS,
    SpecError,
    is_user_error,
    read_builtin_baseline,
    sniff_model_format,
)

from .models import EvaluationJob, Submission
from .outcomes import failures_text

log = logging.getLogger(__name__)

MODEL_EXTENSIONS = (".pt", ".pth", ".pt2", ".onnx", ".ts", ".jit", ".zip")
SOURCE_EXTENSIONS = (".py",)
BUILTIN_EXTENSIONS = (".json",)  # builtin baselines (runner.spec.BUILTIN_FORMAT): maintainers only
ARTIFACT_NAME_MAX_BYTES = 200  # Submission.artifact_name holds at most this many characters


class ArtifactStorageError(Exception):
    """The artifact could not be stored (disk, permissions, object store): the platform's fault,
    never the uploader's. Nothing was created; ``str(exc)`` is the message for the uploader."""


def artifact_display_name(raw: str | None, *, max_bytes: int = ARTIFACT_NAME_MAX_BYTES) -> str:
    """The uploader's file name as metadata to show: its last path component (``/`` or ``\\``),
    without control or format characters (NUL, newlines, right-to-left overrides, zero-width
    characters), at most ``max_bytes`` bytes of UTF-8 with the extension kept and no character
    cut in half. "" when nothing is left. It is never used as a storage name."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in " ".join(name.split()) if not unicodedata.category(c).startswith("C")).strip()
    if len(name.encode()) <= max_bytes:
        return name
    path = PurePath(name)
    suffix = path.suffix if len(path.suffix.encode()) <= max_bytes // 4 else ""
    stem = name[: len(name) - len(suffix)] if suffix else name
    budget = max_bytes - len(suffix.encode()) - len("…".encode())
    return stem.encode()[:budget].decode("utf-8", "ignore").rstrip() + "…" + suffix


# --------------------------------------------------------------------------------------------
# Quotas
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Quota:
    per_day: int
    per_day_left: int
    concurrent: int
    concurrent_left: int
    unlimited: bool = False

    @property
    def allows_submission(self) -> bool:
        return self.unlimited or (self.per_day_left > 0 and self.concurrent_left > 0)


def user_quota(*, user) -> Quota:
    """What a user may still submit. Rejected uploads and infrastructure failures never count."""
    per_day, concurrent = settings.SUBMISSIONS_PER_DAY, settings.SUBMISSIONS_CONCURRENT
    if user.is_staff:
        return Quota(per_day, per_day, concurrent, concurrent, unlimited=True)
    since = timezone.now() - timedelta(days=1)
    counted = Submission.objects.filter(owner=user, counts_against_quota=True).exclude(
        status=Submission.Status.REJECTED
    )
    used_today = counted.filter(created_at__gte=since).count()
    active = Submission.objects.filter(owner=user, status__in=Submission.ACTIVE_STATUSES).count()
    return Quota(per_day, max(0, per_day - used_today), concurrent, max(0, concurrent - active))


# --------------------------------------------------------------------------------------------
# Checking what was uploaded
# --------------------------------------------------------------------------------------------
def check_optimizer_source(source: bytes, hparams: dict[str, Any]) -> None:
    """Static checks of an optimizer file: it parses, defines make_optimizer(params, ...), and the
    hyperparameters fit its signature. The runner checks again when it runs the file."""
    try:
        text = source.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError("The optimizer file is not UTF-8 text.", code="not_text") from exc
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise ValidationError(
            "The optimizer file does not parse: %(msg)s at line %(line)s.",
            code="syntax_error",
            params={"msg": exc.msg, "line": exc.lineno},
        ) from exc
    fn = next(
        (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "make_optimizer"),
        None,
    )
    if fn is None:
        raise ValidationError(
            "The file must define a top-level function make_optimizer(params, **hparams) that returns "
            "a torch.optim.Optimizer.",
            code="no_entry_point",
        )
    positional = [a.arg for a in fn.args.posonlyargs + fn.args.args]
    if not positional and fn.args.vararg is None:
        raise ValidationError(
            "make_optimizer must take the model's parameters as its first argument.", code="bad_signature"
        )
    if fn.args.kwarg is None:
        accepted = set(positional[1:]) | {a.arg for a in fn.args.kwonlyargs}
        unknown = sorted(set(hparams) - accepted)
        if unknown:
            raise ValidationError(
                "Hyperparameters %(unknown)s do not fit make_optimizer's signature; it accepts %(accepted)s.",
                code="bad_hparams",
                params={"unknown": ", ".join(unknown), "accepted": ", ".join(sorted(accepted)) or "none"},
            )


def _sniff_upload(upload, kind: str, *, allow_builtin: bool = False) -> str:
    """The artifact format, from the content; ValidationError with advice otherwise."""
    upload.seek(0)
    head = upload.read(4096)
    upload.seek(0)
    if kind == Benchmark.Kind.OPTIMIZER:
        return "python"
    try:
        if allow_builtin and head.lstrip()[:1] == b"{":
            read_builtin_baseline(upload.read(BUILTIN_MAX_BYTES + 1), kind)
            return BUILTIN_FORMAT
        return sniff_model_format(head, upload)
    except SpecError as exc:
        raise ValidationError(str(exc), code="bad_format") from exc
    finally:
        upload.seek(0)


def _hash_upload(upload: UploadedFile) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    for chunk in upload.chunks():
        digest.update(chunk)
        size += len(chunk)
    upload.seek(0)
    return digest.hexdigest(), size


def check_upload(*, benchmark: Benchmark, upload: UploadedFile | None, hparams: Any,
                 allow_builtin: bool = False) -> tuple[str, str, int]:
    """Everything that can be said about an upload before it is stored; returns (format, sha256,
    size). Raises ValidationError keyed by field. ``allow_builtin`` (maintainers' baselines only)
    also accepts a builtin-baseline file naming reference code the runners ship."""
    if not isinstance(hparams, dict):
        raise ValidationError({"hparams": ValidationError("Hyperparameters must be a JSON object, e.g. {\"lr\": 0.001}.", code="not_object")})
    unstorable = find_unstorable(hparams)
    if unstorable:
        raise ValidationError({"hparams": ValidationError(
            "Hyperparameters cannot hold %(what)s (at %(where)s); no database stores it as text.",
            code="bad_hparams", params=unstorable)})
    if upload is None:
        raise ValidationError({"artifact": ValidationError("Choose a file to upload.", code="required")})
    is_optimizer = benchmark.kind == Benchmark.Kind.OPTIMIZER
    display_name = artifact_display_name(upload.name)
    suffix = PurePath(display_name).suffix.lower()
    allowed = SOURCE_EXTENSIONS if is_optimizer else MODEL_EXTENSIONS + (BUILTIN_EXTENSIONS if allow_builtin else ())
    if suffix not in allowed:
        what = "an optimizer: one Python source file" if is_optimizer else "a model: TorchScript, .pt2 or ONNX"
        raise ValidationError(
            {"artifact": ValidationError(
                "“%(name)s” has the extension %(suffix)s; %(bench)s takes %(what)s (%(allowed)s).",
                code="bad_extension",
                params={"name": display_name, "suffix": suffix or "(none)", "bench": benchmark.title,
                        "what": what, "allowed": ", ".join(allowed)},
            )}
        )
    limit = settings.MAX_SOURCE_BYTES if is_optimizer else settings.MAX_ARTIFACT_BYTES
    if upload.size == 0:
        raise ValidationError({"artifact": ValidationError("The file is empty.", code="empty")})
    if upload.size > limit:
        raise ValidationError({"artifact": ValidationError(
            "The file is %(size)s bytes; the limit for this benchmark is %(limit)s bytes.",
            code="too_large", params={"size": upload.size, "limit": limit})})
    try:
        artifact_format = _sniff_upload(upload, benchmark.kind, allow_builtin=allow_builtin)
        if is_optimizer:
            upload.seek(0)
            check_optimizer_source(upload.read(), hparams)
            upload.seek(0)
    except ValidationError as exc:
        field = "hparams" if getattr(exc, "code", "") == "bad_hparams" else "artifact"
        raise ValidationError({field: exc}) from exc
    accepted = MODEL_HPARAM_KEYS.get(benchmark.kind)
    if accepted is not None and set(hparams) - set(accepted):
        raise ValidationError({"hparams": ValidationError(
            "A %(kind)s takes no hyperparameter %(unknown)s; accepted: %(accepted)s (evaluation settings, "
            "not training ones).", code="bad_hparams",
            params={"kind": benchmark.kind, "unknown": ", ".join(sorted(set(hparams) - set(accepted))),
                    "accepted": ", ".join(accepted)})})
    sha256, size = _hash_upload(upload)
    return artifact_format, sha256, size


# --------------------------------------------------------------------------------------------
# Create → validate → dispatch
# --------------------------------------------------------------------------------------------
def submission_create(
    *,
    owner,
    benchmark: Benchmark,
    name: str,
    upload: UploadedFile | None,
    hparams: Any = None,
    description: str = "",
    paper_url: str = "",
    code_url: str = "",
    model_family: str = "",
    visibility: str = Submission.Visibility.PUBLIC,
    is_baseline: bool = False,
) -> Submission:
    hparams = {} if hparams is None else hparams
    if not benchmark.is_active:
        raise ValidationError({"benchmark": ValidationError("This benchmark takes no submissions now.", code="inactive")})
    artifact_format, sha256, size = check_upload(benchmark=benchmark, upload=upload, hparams=hparams,
                                                 allow_builtin=is_baseline)
    quota = user_quota(user=owner)
    if not quota.allows_submission and not is_baseline:
        if quota.concurrent_left == 0:
            msg = "You already have %(n)s submissions being evaluated; wait until one finishes."
            n = quota.concurrent
        else:
            msg = "You have used your %(n)s submissions for the last 24 hours; try again later."
            n = quota.per_day
        raise ValidationError(msg, code="quota", params={"n": n})
    display_name = artifact_display_name(upload.name)
    with transaction.atomic():
        submission = Submission(
            owner=owner, benchmark=benchmark, name=name.strip() or PurePath(display_name).stem[:120],
            description=description, paper_url=paper_url, code_url=code_url, model_family=model_family,
            artifact_name=display_name, artifact_format=artifact_format,
            artifact_sha256=sha256, artifact_size=size, hparams=hparams, visibility=visibility,
            is_baseline=is_baseline,
        )
        _store_artifact(submission, upload, suffix=PurePath(display_name).suffix.lower())
        submission.save()
        transaction.on_commit(lambda: _enqueue_validation(submission.pk))
    return submission


def _store_artifact(submission: Submission, upload: UploadedFile, *, suffix: str) -> None:
    """Write the upload under the platform's own name (models.artifact_upload_to). Any failure of
    the storage backend (a full disk, permissions, an object store that is down) is logged with
    its traceback and raised as ArtifactStorageError; the caller's transaction then creates nothing."""
    try:
        submission.artifact.save(f"artifact{suffix}", upload, save=False)
    except Exception as exc:  # the backend's own error types differ (OSError, botocore, ...)
        log.exception("could not store an artifact of %s bytes (sha256 %s) for user %s",
                      submission.artifact_size, submission.artifact_sha256, submission.owner_id)
        raise ArtifactStorageError(
            "The file could not be stored because of a fault on our side (it has been logged). "
            "Nothing was submitted and nothing counts against your quota; please try again later."
        ) from exc


def _enqueue_validation(submission_id: int) -> None:
    from .tasks import validate_submission

    try:
        validate_submission.delay(submission_id)
    except Exception:  # broker down: the reaper validates stranded uploads later
        log.exception("could not enqueue validation of submission %s; the reaper will", submission_id)


def submission_validate(*, submission_id: int) -> Submission:
    """uploaded → validating → queued (jobs created and dispatched) or rejected."""
    claimed = Submission.objects.filter(pk=submission_id, status=Submission.Status.UPLOADED).update(
        status=Submission.Status.VALIDATING
    )
    submission = Submission.objects.select_related("benchmark").get(pk=submission_id)
    if not claimed:
        return submission
    try:
        with submission.artifact.open("rb") as fh:
            digest = hashlib.sha256()
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
            if digest.hexdigest() != submission.artifact_sha256:
                raise ValidationError("The stored file does not match its checksum; upload it again.", code="checksum")
            fh.seek(0)
            if submission.benchmark.kind == Benchmark.Kind.OPTIMIZER:
                check_optimizer_source(fh.read(), submission.hparams)
            elif submission.artifact_format == BUILTIN_FORMAT:
                if not submission.is_baseline:
                    raise ValidationError("Builtin artifacts are reserved for the maintainers' baselines.",
                                          code="bad_format")
                read_builtin_baseline(fh.read(), submission.benchmark.kind)
            else:
                fmt = sniff_model_format(fh.read(4096), fh)
                if fmt != submission.artifact_format:
                    raise ValidationError("The stored file changed format.", code="bad_format")
    except (ValidationError, SpecError) as exc:
        message = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        code = getattr(exc, "code", None) or "invalid_artifact"
        Submission.objects.filter(pk=submission_id).update(
            status=Submission.Status.REJECTED, error_code=code, error_message=message, finished_at=timezone.now()
        )
        submission.refresh_from_db()
        return submission
    with transaction.atomic():
        jobs = [EvaluationJob(submission=submission, task=task) for task in submission.benchmark.tasks.all()]
        EvaluationJob.objects.bulk_create(jobs, ignore_conflicts=True)
        Submission.objects.filter(pk=submission_id, status=Submission.Status.VALIDATING).update(
            status=Submission.Status.QUEUED
        )
        job_ids = list(EvaluationJob.objects.filter(submission=submission).values_list("pk", flat=True))
        transaction.on_commit(lambda: [job_dispatch(job_id=j) for j in job_ids])
    submission.refresh_from_db()
    return submission


def send_evaluate(*, job_id: int, queue: str) -> None:
    """Wake a runner of the job's pool. Only the id travels; the runner claims the rest."""
    from leaderboard.celery import app

    # A fresh connection per dispatch (they are rare): a broker that went away and came back is
    # simply reached again, and one that is down raises at once instead of retrying for minutes.
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=5)
        app.send_task(EVALUATE_TASK_NAME, args=[job_id], queue=queue, connection=connection, retry=False)


def job_dispatch(*, job_id: int) -> bool:
    """pending → dispatched, then send. When the broker refuses, the job goes back to pending
    and the reaper tries again: nothing is lost while the broker is down."""
    now = timezone.now()
    job = EvaluationJob.objects.select_related("task").get(pk=job_id)
    marked = EvaluationJob.objects.filter(pk=job_id, state=EvaluationJob.State.PENDING).update(
        state=EvaluationJob.State.DISPATCHED, dispatched_at=now, dispatches=F("dispatches") + 1
    )
    if not marked:
        return False
    try:
        send_evaluate(job_id=job_id, queue=job.task.queue)
    except Exception as exc:
        log.warning("broker refused job %s (%s); it stays pending for the reaper", job_id, exc)
        EvaluationJob.objects.filter(pk=job_id, state=EvaluationJob.State.DISPATCHED).update(
            state=EvaluationJob.State.PENDING, dispatches=F("dispatches") - 1
        )
        return False
    return True


# --------------------------------------------------------------------------------------------
# Ending
# --------------------------------------------------------------------------------------------
def submission_aggregate(*, submission_id: int) -> Submission:
    """Once every job of a submission has ended: finished when all succeeded, failed otherwise,
    with a message that names each failed task. Infrastructure-only failures never count."""
    from leaderboard.boards.services import board_entry_upsert

    with transaction.atomic():
        submission = Submission.objects.select_for_update().get(pk=submission_id)
        jobs = list(submission.jobs.select_related("task"))
        # A result is written once per attempt, edits to the submission reach its rows through
        # board_entries_refresh_submission and a rerun deletes them: only new results need a row.
        on_board = set(submission.board_entries.values_list("task_id", flat=True))
        for job in jobs:
            if job.state == EvaluationJob.State.SUCCEEDED and job.task_id not in on_board:
                board_entry_upsert(job=job, submission=submission)
        if submission.status in Submission.ENDED_STATUSES or not jobs:
            return submission
        if not all(job.has_ended for job in jobs):
            if any(job.state == EvaluationJob.State.RUNNING for job in jobs) and submission.status == Submission.Status.QUEUED:
                submission.status = Submission.Status.RUNNING
                submission.save(update_fields=["status", "updated_at"])
            return submission
        failed = [job for job in jobs if job.state != EvaluationJob.State.SUCCEEDED]
        submission.finished_at = timezone.now()
        if not failed:
            submission.status = Submission.Status.FINISHED
            submission.error_code = submission.error_message = ""
        else:
            submission.status = Submission.Status.FAILED
            user_failures = [j for j in failed if is_user_error(j.error_kind)]
            submission.counts_against_quota = bool(user_failures)
            submission.error_code = (user_failures or failed)[0].error_kind or "cancelled"
            submission.error_message = failures_text(failed, lambda job: job.error_message or job.state)
        submission.save()
    return submission


def submission_cancel(*, submission_id: int, reason: str = "cancelled by its owner") -> Submission:
    """Stop a submission: jobs not yet ended are cancelled; a runner finds out at its next heartbeat."""
    now = timezone.now()
    EvaluationJob.objects.filter(submission_id=submission_id).exclude(
        state__in=EvaluationJob.ENDED_STATES
    ).update(state=EvaluationJob.State.CANCELLED, error_message=reason, finished_at=now)
    Submission.objects.filter(pk=submission_id).filter(
        Q(status__in=Submission.ACTIVE_STATUSES)
    ).update(status=Submission.Status.FAILED, error_code="cancelled", error_message=reason,
             counts_against_quota=False, finished_at=now)
    return Submission.objects.get(pk=submission_id)


def submission_rerun(*, submission_id: int) -> Submission:
    """Maintainers: evaluate an ended submission again from scratch (e.g. after a runner fix)."""
    with transaction.atomic():
        submission = Submission.objects.select_for_update().get(pk=submission_id)
        submission.jobs.all().delete()
        submission.board_entries.all().delete()
        submission.status = Submission.Status.UPLOADED
        submission.error_code = submission.error_message = ""
        submission.finished_at = None
        submission.save()
        transaction.on_commit(lambda: _enqueue_validation(submission_id))
    return submission
