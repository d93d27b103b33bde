"""Writes for submissions: check an upload, create, cancel, re-run, and send to validation. Views,
the API and the reaper call these; the rules live here (DESIGN.md "Lifecycle"). Validating a
stored upload is validation.py's (run by tasks.validate_submission); the jobs' transitions and
aggregation are leaderboard.jobs.transitions'."""
from __future__ import annotations

import hashlib
import logging
import unicodedata
from dataclasses import dataclass
from datetime import timedelta
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from leaderboard.benchmarks.models import Benchmark
from leaderboard.jobs.transitions import jobs_cancel
from leaderboard.text import find_unstorable
from runner.spec import (
    BUILTIN_FORMAT,
    BUILTIN_MAX_BYTES,
    MODEL_HPARAM_KEYS,
    SpecError,
    read_builtin_baseline,
    sniff_model_format,
)

from .models import Submission
from .tasks import validate_submission
from .validation import check_model_artifact, check_optimizer_source

if TYPE_CHECKING:
    from django.contrib.auth.models import User

log = logging.getLogger(__name__)

MODEL_EXTENSIONS = (".pt", ".pth", ".pt2", ".onnx", ".ts", ".jit", ".zip", ".safetensors")
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


def user_quota(*, user: User) -> Quota:
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
def _sniff_upload(upload: UploadedFile, kind: str, *, allow_builtin: bool = False) -> str:
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
        return sniff_model_format(head, cast(BinaryIO, upload))  # an UploadedFile reads and seeks
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
        what = "an optimizer: one Python source file" if is_optimizer else "a model: TorchScript, .pt2, ONNX or .safetensors weights"
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
    if (upload.size or 0) > limit:
        raise ValidationError({"artifact": ValidationError(
            "The file is %(size)s bytes; the limit for this benchmark is %(limit)s bytes.",
            code="too_large", params={"size": upload.size, "limit": limit})})
    try:
        artifact_format = _sniff_upload(upload, benchmark.kind, allow_builtin=allow_builtin)
        if is_optimizer:
            upload.seek(0)
            check_optimizer_source(upload.read(), hparams)
            upload.seek(0)
        elif artifact_format != BUILTIN_FORMAT:
            check_model_artifact(artifact_format, cast(BinaryIO, upload), upload.size or 0, hparams, benchmark.kind)
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
# Create → send to validation
# --------------------------------------------------------------------------------------------
def submission_create(
    *,
    owner: User,
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
    """A new submission, uploaded: ``upload``'s bytes are checked (:func:`check_upload`: extension,
    size within settings.MAX_SOURCE_BYTES or MAX_ARTIFACT_BYTES, format sniffed from the content,
    ``hparams`` a JSON object the submission kind accepts, default {}), the uploader's quota is
    checked (baselines are exempt), and the file is stored under the platform's own name with its
    sha256 and size in bytes. ``name`` defaults to the file's stem; ``is_baseline`` (maintainers
    only) also accepts builtin-baseline files. Validation is sent to the site queue once the
    caller's transaction commits (:func:`submission_enqueue_validation`). Returns the saved
    submission, status uploaded.

    Raises ValidationError: keyed by field ("benchmark" inactive, "artifact", "hparams") for a
    bad upload, or with code "quota" when the quota is used up; ArtifactStorageError when the
    storage backend fails (nothing is created)."""
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
    assert upload is not None  # check_upload refused a missing file
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
        transaction.on_commit(lambda: submission_enqueue_validation(submission_id=submission.pk))
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


def submission_enqueue_validation(*, submission_id: int) -> bool:
    """Send an uploaded submission to the validation task (site queue); True when the broker took
    the message. A broker that is down is logged, not raised: the upload stays uploaded and the
    reaper sends it again."""
    try:
        validate_submission.delay(submission_id)
    except Exception:  # broker down: the reaper sends stranded uploads later
        log.exception("could not enqueue validation of submission %s; the reaper will", submission_id)
        return False
    return True


# --------------------------------------------------------------------------------------------
# Ending
# --------------------------------------------------------------------------------------------
def submission_cancel(*, submission_id: int, reason: str = "cancelled by its owner") -> Submission:
    """Stop a submission: jobs not yet ended are cancelled (jobs.transitions.jobs_cancel; a runner
    finds out at its next heartbeat) and, while it is active, it fails with code "cancelled" and
    ``reason`` as its message, never counting against the quota. Returns the submission;
    Submission.DoesNotExist for an unknown id."""
    now = timezone.now()
    jobs_cancel(submission_id=submission_id, reason=reason, now=now)
    Submission.objects.filter(pk=submission_id).filter(
        Q(status__in=Submission.ACTIVE_STATUSES)
    ).update(status=Submission.Status.FAILED, error_code="cancelled", error_message=reason,
             counts_against_quota=False, finished_at=now)
    return Submission.objects.get(pk=submission_id)


def submission_rerun(*, submission_id: int) -> Submission:
    """Maintainers: evaluate an ended submission again from scratch (e.g. after a runner fix): its
    jobs and board rows are deleted, it goes back to uploaded and is sent to validation once this
    commits. Returns the submission; Submission.DoesNotExist for an unknown id."""
    with transaction.atomic():
        submission = Submission.objects.select_for_update().get(pk=submission_id)
        submission.jobs.all().delete()
        submission.board_entries.all().delete()
        submission.status = Submission.Status.UPLOADED
        submission.error_code = submission.error_message = ""
        submission.finished_at = None
        submission.save()
        transaction.on_commit(lambda: submission_enqueue_validation(submission_id=submission_id))
    return submission
