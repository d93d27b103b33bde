"""The runner HTTP API (see runner/spec.py for the contract) and the runners status page.
Views parse, call one transition (leaderboard.jobs.transitions) or runner service, and answer
JSON; the rules live there."""
from __future__ import annotations

import hashlib
import json
import re
import tempfile
from functools import wraps

from django.conf import settings
from django.core.files import File
from django.db import transaction
from django.db.models import Count, Q
from django.http import FileResponse, HttpRequest, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from leaderboard.accounts.models import hash_token
from leaderboard.jobs import transitions
from leaderboard.submissions.models import EvaluationJob
from leaderboard.submissions.per_image import check_against_result
from leaderboard.text import storable
from runner.per_image_file import MAX_FILE_BYTES, PerImageError, read_per_image
from runner.spec import MAX_NODE_DATASETS, SpecError, validate_node_report

from . import services
from .models import RunnerNode


def _held_names(body: dict) -> set[str] | None:
    """The dataset names a claim says this runner holds (bare names or {"name": ...} entries);
    None when the claim says nothing about its data (then nothing is checked)."""
    datasets = body.get("datasets")
    if not isinstance(datasets, list):
        return None
    names = (d.get("name") if isinstance(d, dict) else d for d in datasets[:MAX_NODE_DATASETS])
    return {n for n in names if isinstance(n, str)}


def _error(status: int, detail: str) -> JsonResponse:
    return JsonResponse({"detail": detail}, status=status)


def _authenticated(request: HttpRequest) -> RunnerNode | JsonResponse:
    """The runner whose `Authorization: Bearer <runner token>` this is, or the 401 to answer."""
    header = request.headers.get("Authorization", "")
    scheme, _, raw = header.partition(" ")
    if scheme.lower() != "bearer" or not raw:
        return _error(401, "missing 'Authorization: Bearer <runner token>'")
    runner = RunnerNode.objects.filter(token_hash=hash_token(raw.strip()), is_active=True).first()
    if runner is None:
        return _error(401, "unknown or revoked runner token")
    return runner


def runner_auth(view):
    """Authenticate `Authorization: Bearer <runner token>` and parse a JSON body."""

    @csrf_exempt
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        runner = _authenticated(request)
        if isinstance(runner, JsonResponse):
            return runner
        body = {}
        if request.method == "POST" and request.body:
            try:
                body = json.loads(request.body)
            except (ValueError, RecursionError):  # json raises RecursionError for deep nesting
                return _error(400, "request body is not JSON")
            if not isinstance(body, dict):
                return _error(400, "request body must be a JSON object")
        return view(request, runner, body, *args, **kwargs)

    return wrapper


def _attempt(body: dict) -> int | None:
    value = body.get("attempt")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@require_POST
@runner_auth
def claim(request, runner, body, job_id: int):
    services.runner_touch(runner=runner, version=str(body.get("version", "")))
    job = transitions.job_claim(job_id=job_id, runner=runner, datasets=_held_names(body))
    if isinstance(job, transitions.ClaimRefused):
        return JsonResponse({"detail": job.message, "reason": "dataset_missing", "dataset": job.dataset}, status=409)
    if job is None:
        if not EvaluationJob.objects.filter(pk=job_id).exists():
            return _error(404, f"no job {job_id}")
        return _error(409, "this job has a live attempt or has ended")
    return JsonResponse({"spec": transitions.job_spec(job).to_dict()})


@require_POST
@runner_auth
def heartbeat(request, runner, body, job_id: int):
    body = storable(body)  # its message may quote the submission
    attempt = _attempt(body)
    if attempt is None:
        return _error(400, "attempt (an integer) is required")
    try:
        progress = float(body.get("progress", 0.0))
    except (TypeError, ValueError):
        return _error(400, "progress must be a number between 0 and 1")
    lease = transitions.job_heartbeat(job_id=job_id, runner=runner, attempt=attempt, progress=progress,
                                   message=str(body.get("message", "")))
    if lease is None:
        return _error(409, "this attempt is no longer live: stop working on it")
    return JsonResponse({"lease_expires_at": lease.isoformat()})


@require_GET
@runner_auth
def artifact(request, runner, body, job_id: int):
    try:
        attempt = int(request.GET.get("attempt", ""))
    except ValueError:
        return _error(400, "?attempt=N is required")
    job = transitions.downloadable_job(job_id=job_id, runner=runner, attempt=attempt)
    if job is None:
        return _error(409, "this attempt is no longer live")
    sub = job.submission
    response = FileResponse(sub.artifact.open("rb"), as_attachment=True, filename=sub.artifact_name)
    response["X-Artifact-SHA256"] = sub.artifact_sha256
    response["Content-Length"] = str(sub.artifact_size)
    return response


def _record(job_id: int, attempt: int | None, record, rejected: str = "") -> JsonResponse:
    """Run one end-of-attempt transition and answer as the runner API promises: 404 unknown job,
    409 stale attempt, 400 a document or kind the spec refuses."""
    if attempt is None:
        return _error(400, "attempt (an integer) is required")
    try:
        recorded = record(attempt)
    except EvaluationJob.DoesNotExist:
        return _error(404, f"no job {job_id}")
    except transitions.Conflict as exc:
        return _error(409, str(exc))
    except SpecError as exc:
        return _error(400, f"{rejected}{exc}")
    return JsonResponse({"state": recorded.job.state, "duplicate": recorded.duplicate})


@require_POST
@runner_auth
def result(request, runner, body, job_id: int):
    body = storable(body)  # it quotes the submission's output: no NUL may stop it being stored
    return _record(job_id, _attempt(body), lambda attempt: transitions.job_record_result(
        job_id=job_id, runner=runner, attempt=attempt, result=body.get("result"),
        log_tail=str(body.get("log_tail", ""))), rejected="result rejected: ")


@require_POST
@runner_auth
def fail(request, runner, body, job_id: int):
    body = storable(body)  # it quotes the submission's output: no NUL may stop it being stored
    return _record(job_id, _attempt(body), lambda attempt: transitions.job_record_failure(
        job_id=job_id, runner=runner, attempt=attempt, kind=str(body.get("kind", "")),
        message=str(body.get("message", "")), log_tail=str(body.get("log_tail", "")),
        repeats=body.get("repeats")), rejected="failure refused: ")


_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def _named_per_image(job: EvaluationJob) -> dict | None:
    """The result's ``files.per_image`` entry when it is well formed ({"sha256": 64 hex digits,
    "n": a positive integer, ...}), else None."""
    files = job.result.get("files") if isinstance(job.result, dict) else None
    entry = files.get("per_image") if isinstance(files, dict) else None
    if not isinstance(entry, dict):
        return None
    sha, n = entry.get("sha256"), entry.get("n")
    if not isinstance(sha, str) or not _SHA256_RE.fullmatch(sha):
        return None
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        return None
    return entry


@csrf_exempt
@require_POST
def per_image(request, job_id: int):
    """``POST jobs/<id>/per-image/?attempt=N``, body the raw ``.npz`` (runner/metrics/per_image.py):
    the per-image outcomes of the result this runner recorded for attempt N, stored with the job.
    Answers 200 ``{"stored": true, "duplicate"}`` (the same file again changes nothing); 401 bad
    token; 404 unknown job; 409 when this runner has recorded no result for that attempt (the
    file follows its result); 413 over MAX_PER_IMAGE_BYTES; 400 when the result names no per-image
    file, the body's sha256 differs from the one it names, the body is not a well-formed
    per-image file of the task (never unpickled; the message says what is wrong), or its top-1
    is not the result's (submissions/per_image.py check_against_result)."""
    runner = _authenticated(request)
    if isinstance(runner, JsonResponse):
        return runner
    try:
        attempt = int(request.GET.get("attempt", ""))
    except ValueError:
        return _error(400, "?attempt=N is required")
    cap = int(getattr(settings, "MAX_PER_IMAGE_BYTES", MAX_FILE_BYTES))
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        declared = -1
    if declared < 0:  # a negative length read as an empty body, refused for its sha256 instead
        return _error(400, "Content-Length must be a number of bytes")
    if declared > cap:
        return _error(413, f"a per-image file may have at most {cap:,} bytes; this one has {declared:,}")
    job = EvaluationJob.objects.select_related("task").filter(pk=job_id).first()
    if job is None:
        return _error(404, f"no job {job_id}")
    if job.state != EvaluationJob.State.SUCCEEDED or job.result_attempt != attempt or job.runner_id != runner.pk:
        return _error(409, f"attempt {attempt} of job {job_id} has no result recorded by this runner: "
                           "post the result first, then its per-image file")
    entry = _named_per_image(job)
    if entry is None:
        return _error(400, "the recorded result names no per-image file (files.per_image with sha256 and n)")
    with tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE) as body:
        digest, size = hashlib.sha256(), 0
        while chunk := request.read(1 << 20):
            size += len(chunk)
            if size > cap:
                return _error(413, f"a per-image file may have at most {cap:,} bytes")
            digest.update(chunk)
            body.write(chunk)
        if digest.hexdigest() != entry["sha256"]:
            return _error(400, f"per-image file refused: its sha256 {digest.hexdigest()} differs from the "
                               f"{entry['sha256']} the result names")
        body.seek(0)
        try:
            check_against_result(read_per_image(body, slug=job.task.slug, expected_n=entry["n"]), job.result)
        except PerImageError as exc:
            return _error(400, f"per-image file refused: {exc}")
        body.seek(0)
        with transaction.atomic():
            job = EvaluationJob.objects.select_for_update().get(pk=job_id)
            if job.per_image:  # checked against the same result's sha256: the same bytes
                return JsonResponse({"stored": True, "duplicate": True})
            job.per_image.save("per_image.npz", File(body), save=False)
            job.save(update_fields=["per_image"])
    return JsonResponse({"stored": True, "duplicate": False})


@require_POST
@runner_auth
def node_heartbeat(request, runner, body):
    """What a runner says of itself (runner/spec.py: version, pools, device, datasets), stored
    as its latest report; 400 naming the field when the report breaks the contract."""
    try:
        report = validate_node_report(body)
    except SpecError as exc:
        return _error(400, f"node report refused: {exc}")
    services.runner_touch(runner=runner, version=str(body.get("version", "")), report=report)
    return JsonResponse({"name": runner.name})


@csrf_exempt
@require_POST
def register(request):
    """`runner register`: a one-time code in, a runner token out (shown once)."""
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, RecursionError):
        return _error(400, "request body is not JSON")
    if not isinstance(body, dict) or not isinstance(body.get("code"), str) or not isinstance(body.get("name"), str):
        return _error(400, "send {\"code\": ..., \"name\": ...}")
    try:
        node, token = services.runner_register(code=body["code"], name=body["name"])
    except services.RegistrationRefused as exc:
        return _error(403, str(exc))
    return JsonResponse({"name": node.name, "pools": node.pools, "token": token}, status=201)


def runners_page(request):
    from .selectors import queue_depths

    nodes = RunnerNode.objects.annotate(
        running=Count("jobs", filter=Q(jobs__state=EvaluationJob.State.RUNNING)),
        done=Count("jobs", filter=Q(jobs__state=EvaluationJob.State.SUCCEEDED)),
    )
    return render(request, "runners/runners.html", {"nodes": nodes, "queues": queue_depths()})
