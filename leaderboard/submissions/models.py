from __future__ import annotations

import re
from pathlib import PurePath

from django.conf import settings
from django.db import models, transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.urls import reverse
from django.utils import timezone

from leaderboard.benchmarks.models import Benchmark, Task
from leaderboard.runners.models import RunnerNode
from runner.spec import MAX_PROGRESS_MESSAGE_CHARS


def artifact_upload_to(instance: Submission, filename: str) -> str:
    """The artifact's storage name, the platform's own: its digest and the lower-cased extension of
    ``filename`` (one the upload checks accepted). The uploader's file name is only metadata
    (``artifact_name``): it never reaches the storage, whatever its length or characters."""
    suffix = PurePath(filename).suffix.lower()
    suffix = suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ""
    return f"artifacts/{instance.artifact_sha256[:2]}/{instance.artifact_sha256}/artifact{suffix}"


def per_image_upload_to(instance: EvaluationJob, filename: str) -> str:
    """The storage name of a job's per-image outcomes (runner/metrics/per_image.py): the platform's
    own, from the job and the attempt whose result names the file; ``filename`` is ignored."""
    return f"per_image/{instance.submission_id}/job{instance.pk}-attempt{instance.result_attempt}.npz"


class Submission(models.Model):
    class Status(models.TextChoices):
        UPLOADED = "uploaded"
        VALIDATING = "validating"
        QUEUED = "queued"
        RUNNING = "running"
        FINISHED = "finished"
        FAILED = "failed"
        REJECTED = "rejected"

    class Visibility(models.TextChoices):
        PUBLIC = "public"
        PRIVATE = "private"

    ACTIVE_STATUSES = (Status.UPLOADED, Status.VALIDATING, Status.QUEUED, Status.RUNNING)
    ENDED_STATUSES = (Status.FINISHED, Status.FAILED, Status.REJECTED)

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="submissions")
    benchmark = models.ForeignKey(Benchmark, on_delete=models.PROTECT, related_name="submissions")
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    paper_url = models.URLField(blank=True)
    code_url = models.URLField(blank=True)
    model_family = models.CharField(max_length=60, blank=True)
    artifact = models.FileField(upload_to=artifact_upload_to, max_length=300)
    artifact_name = models.CharField(max_length=200)
    artifact_format = models.CharField(max_length=20, blank=True)
    artifact_sha256 = models.CharField(max_length=64)
    artifact_size = models.BigIntegerField()
    hparams = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.UPLOADED, db_index=True)
    error_code = models.CharField(max_length=40, blank=True)
    error_message = models.TextField(blank=True)
    visibility = models.CharField(max_length=10, choices=Visibility.choices, default=Visibility.PUBLIC)
    is_baseline = models.BooleanField(default=False, help_text="A reference method seeded by the maintainers.")
    counts_against_quota = models.BooleanField(
        default=True, help_text="False when only infrastructure failed it: such runs never count."
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "created_at"])]

    def __str__(self) -> str:
        return f"#{self.pk} {self.name}"

    def get_absolute_url(self) -> str:
        return reverse("submission-detail", args=[self.pk])

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE_STATUSES

    def visible_to(self, user) -> bool:
        return self.visibility == self.Visibility.PUBLIC or (user.is_authenticated and (user == self.owner or user.is_staff))

    def details_visible_to(self, user) -> bool:
        """Whether ``user`` may read failures in full (messages, log tails): the owner and staff.
        Everyone else sees an error kind and a one-line, path-free summary (outcomes.py)."""
        return user.is_authenticated and (user.pk == self.owner_id or user.is_staff)


def result_is_synthetic(result: object) -> bool:
    """Whether a result document was scored on a fake (synthetic) dataset: its ``env`` says
    ``synthetic_data`` (or the older ``fake_data``). Every page, row and export that shows the
    result must say so."""
    env = result.get("env", {}) if isinstance(result, dict) else {}
    return bool(isinstance(env, dict) and (env.get("synthetic_data") or env.get("fake_data")))


def result_loop_in_sandbox(result: object) -> bool:
    """Whether a result document's training loop ran inside the sandbox, beside the submission
    (``env.loop == "sandbox"``: training tasks on a GPU), rather than in the runner (``"runner"``,
    or no ``loop`` at all: every other track). Such a result is not forgery-proof: the submission
    shared a process with the loop, its budget counters and the model (docs/submissions.md, "Who can
    forge what"). Every page, row and export that shows the result must say so."""
    env = result.get("env", {}) if isinstance(result, dict) else {}
    return isinstance(env, dict) and env.get("loop") == "sandbox"


class EvaluationJob(models.Model):
    """One task of one submission. The database is the truth about its state; the broker only wakes
    runners. Every transition is a conditional update (see services)."""

    class State(models.TextChoices):
        PENDING = "pending"
        DISPATCHED = "dispatched"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    ENDED_STATES = (State.SUCCEEDED, State.FAILED, State.CANCELLED)
    # The reason a cancelled job carries when a sibling failed in a way certain to recur
    # (runner.spec.failure_repeats), followed by that sibling's task slug.
    SKIPPED_PREFIX = "skipped: same failure as "

    submission = models.ForeignKey(Submission, on_delete=models.CASCADE, related_name="jobs")
    task = models.ForeignKey(Task, on_delete=models.PROTECT, related_name="jobs")
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING, db_index=True)
    attempt = models.PositiveIntegerField(default=0, help_text="Claims so far; each claim is a new attempt.")
    dispatches = models.PositiveIntegerField(default=0, help_text="Messages sent to the runner queue.")
    runner = models.ForeignKey(RunnerNode, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    progress = models.FloatField(default=0.0)
    progress_message = models.CharField(max_length=MAX_PROGRESS_MESSAGE_CHARS, blank=True)  # runner/spec.py
    error_kind = models.CharField(max_length=40, blank=True)
    error_message = models.TextField(blank=True)
    log_tail = models.TextField(blank=True)
    result = models.JSONField(null=True, blank=True)
    result_attempt = models.PositiveIntegerField(null=True, blank=True)
    per_image = models.FileField(
        upload_to=per_image_upload_to, max_length=300, null=True, blank=True,
        help_text="The result's per-image outcomes (an .npz the runner uploads after the result; "
                  "leaderboard/submissions/per_image.py reads it).",
    )
    created_at = models.DateTimeField(default=timezone.now)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["submission_id", "task__position"]
        constraints = [models.UniqueConstraint(fields=["submission", "task"], name="one_job_per_task")]
        indexes = [models.Index(fields=["state", "lease_expires_at"]), models.Index(fields=["state", "dispatched_at"])]

    def __str__(self) -> str:
        return f"job {self.pk} ({self.task_id}, {self.state})"

    @property
    def has_ended(self) -> bool:
        return self.state in self.ENDED_STATES

    @property
    def skipped_after(self) -> str:
        """The slug of the task whose failure made this job pointless ("" unless it was skipped)."""
        if self.state != self.State.CANCELLED or not self.error_message.startswith(self.SKIPPED_PREFIX):
            return ""
        return self.error_message[len(self.SKIPPED_PREFIX):]


@receiver(post_delete, sender=EvaluationJob)
def _remove_per_image_file(sender: type[EvaluationJob], instance: EvaluationJob, **kwargs: object) -> None:
    """A deleted job takes its per-image file along once the deletion commits (a maintainer's
    re-run deletes every job of the submission; the new jobs get files of their own)."""
    if instance.per_image:
        name, storage = instance.per_image.name, instance.per_image.storage
        transaction.on_commit(lambda: storage.delete(name))


class OutcomeVectors(models.Model):
    """A job's per-image outcomes in the compact form every page and the tie refresh read
    (leaderboard/submissions/per_image.py builds and reads it; its docstring says why the
    database), written once from the job's ``.npz`` and valid while ``source`` and ``sha256``
    name the job's current file and ``form`` is the builder's. Every array is in the canonical
    image order (the primary part's images sorted by their keys, as paired.align orders them)."""

    job = models.OneToOneField(EvaluationJob, on_delete=models.CASCADE, primary_key=True,
                               related_name="outcome_vectors")
    source = models.CharField(max_length=300, help_text="Storage name of the per-image file these come from.")
    sha256 = models.CharField(max_length=64, help_text="sha256 of that file's bytes.")
    form = models.PositiveSmallIntegerField(help_text="Version of the compact form (per_image.FORM).")
    n_images = models.PositiveIntegerField()
    key_names = models.CharField(max_length=100, help_text="The image keys, comma-separated, in sort order.")
    keys_digest = models.CharField(max_length=64, help_text="sha256 of the key columns in canonical order.")
    hits = models.BinaryField(help_text="Top-1 hits, numpy.packbits of bool [n_images].")
    sets = models.BinaryField(help_text=".npy of the set code per image (multi-set tasks), empty otherwise.")
    el2n = models.BinaryField(help_text="EL2N per image, little-endian float32 [n_images].")
    thumbs = models.BinaryField(help_text="Each thumbnail's canonical position, little-endian int32 [M] (-1: none).")
    detail = models.BinaryField(help_text="Compressed .npz: label, pred, top5 bits, loss, file rows, key columns.")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"outcome vectors of job {self.job_id}"
