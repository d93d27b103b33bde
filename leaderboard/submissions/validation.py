"""uploaded → validating → queued | rejected: the checks of an artifact's content, and the
validation of a stored upload that the validation task (tasks.validate_submission) runs. The
same content checks run at upload (services.check_upload) and again here on the stored file."""
from __future__ import annotations

import ast
import hashlib
from typing import Any, BinaryIO, cast

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from leaderboard.benchmarks.models import Benchmark
from leaderboard.jobs.transitions import jobs_create
from runner.architectures import SAFETENSORS_FORMAT, check_architecture_hparams, read_safetensors_header
from runner.spec import BUILTIN_FORMAT, SpecError, read_builtin_baseline, sniff_model_format

from .models import Submission


def check_optimizer_source(source: bytes, hparams: dict[str, Any]) -> None:
    """Static checks of an optimizer file (``source``: its bytes): it is UTF-8, parses, defines
    make_optimizer(params, ...), and ``hparams`` fit its signature. Raises ValidationError with
    code not_text, syntax_error, no_entry_point, bad_signature or bad_hparams. The runner checks
    again when it runs the file."""
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


def check_model_artifact(fmt: str, fh: BinaryIO, size: int, hparams: dict[str, Any], kind: str) -> None:
    """What the site can check of a classifier's or denoiser's file of format ``fmt`` (open at
    ``fh``, ``size`` bytes) with its ``hparams`` without torch: a .safetensors file's header
    (runner.architectures.read_safetensors_header: dtypes, shapes, every tensor inside the file)
    and the architecture its hyperparameters name (check_architecture_hparams: a torchvision or
    timm classifier of the shipped allow-list, num_classes, mean and std); any other format must
    not carry those keys. Names, shapes and dtypes against the architecture itself are checked
    when the runner first loads it. Raises ValidationError code bad_hparams (the hyperparameters)
    or bad_format (the file)."""
    try:
        check_architecture_hparams(hparams, kind, fmt)
    except SpecError as exc:
        raise ValidationError(str(exc)[:1].upper() + str(exc)[1:] + ".", code="bad_hparams") from exc
    if fmt == SAFETENSORS_FORMAT:
        try:
            read_safetensors_header(fh, size)
        except SpecError as exc:
            raise ValidationError(str(exc)[:1].upper() + str(exc)[1:] + ".", code="bad_format") from exc
        finally:
            fh.seek(0)


def submission_validate(*, submission_id: int) -> Submission:
    """uploaded → validating → queued (its jobs created, and dispatched on commit) or rejected
    (error_code and error_message say why: a checksum that no longer matches, a format that
    changed, an optimizer file that fails check_optimizer_source, a builtin artifact that is not
    a maintainer's baseline, a model file that fails check_model_artifact). Reads and hashes the whole stored file (up to
    settings.MAX_ARTIFACT_BYTES), so it runs in the validation task, never in a request or the
    reaper. Only the call that moves the upload from uploaded to validating does anything, so a
    message delivered twice is harmless. Returns the submission as it now is;
    Submission.DoesNotExist for an unknown id."""
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
                fmt = sniff_model_format(fh.read(4096), cast(BinaryIO, fh))  # a FieldFile reads and seeks
                if fmt != submission.artifact_format:
                    raise ValidationError("The stored file changed format.", code="bad_format")
                fh.seek(0)
                check_model_artifact(fmt, cast(BinaryIO, fh), submission.artifact_size, submission.hparams,
                                     submission.benchmark.kind)
    except (ValidationError, SpecError) as exc:
        message = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        code = getattr(exc, "code", None) or "invalid_artifact"
        Submission.objects.filter(pk=submission_id).update(
            status=Submission.Status.REJECTED, error_code=code, error_message=message, finished_at=timezone.now()
        )
        submission.refresh_from_db()
        return submission
    with transaction.atomic():
        jobs_create(submission=submission)  # dispatched once this commits
        Submission.objects.filter(pk=submission_id, status=Submission.Status.VALIDATING).update(
            status=Submission.Status.QUEUED
        )
    submission.refresh_from_db()
    return submission
