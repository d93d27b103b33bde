from __future__ import annotations

import base64
import binascii
from typing import Any

from leaderboard.runners.selectors import WaitReason, job_wait_reasons
from runner.catalogue import track_of
from runner.spec import finite_float

from .models import EvaluationJob, Submission, result_is_synthetic, result_loop_in_sandbox
from .outcomes import error_summary, failures_text, job_outcome


def job_summary(job: EvaluationJob, reason: WaitReason | None = None, *, detailed: bool = False) -> dict[str, Any]:
    """One job as the page and the API show it; ``reason``: why it waits, when it does
    (leaderboard.runners.selectors.job_wait_reasons). ``detailed`` (the owner and staff): the
    whole error message and the log tail; otherwise the one-line summary and no log tail.
    ``outcome`` says how an ended job ended (None while it has not)."""
    result = job.result or {}
    summary = error_summary(job.error_message)
    return {
        "id": job.pk,
        "task": job.task.slug,
        "task_title": job.task.title,
        "primary_metric": job.task.primary_metric,
        "higher_is_better": job.task.higher_is_better,
        "state": job.state,
        "attempt": job.attempt,
        "progress": round(job.progress, 4),
        "progress_message": job.progress_message,
        "runner": job.runner.name if job.runner_id else None,
        "error_kind": job.error_kind,
        "error_message": job.error_message if detailed else summary,
        "error_summary": summary,
        "log_tail": job.log_tail if detailed else "",
        "outcome": job_outcome(job),
        "metrics": result.get("metrics", {}),
        "synthetic_data": result_is_synthetic(result),
        "loop_in_sandbox": result_loop_in_sandbox(result),
        "ci95": result.get("ci95", {}),
        "env": result.get("env", {}),
        "timing": result.get("timing", {}),
        "claimed_at": job.claimed_at.isoformat() if job.claimed_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "waiting_reason": reason.message if reason else None,
        "waiting_code": reason.code if reason else None,
    }


def public_submission_error(*, submission: Submission, jobs: list[EvaluationJob]) -> str:
    """The submission's error as anyone may read it: per failed task its one-line summary (the
    stored message joins the tasks' full messages), else the summary of the stored message."""
    failed = [j for j in jobs if (j.state == EvaluationJob.State.FAILED and j.error_message) or j.skipped_after]
    if submission.status == Submission.Status.FAILED and failed:
        return failures_text(failed, lambda job: error_summary(job.error_message))
    return error_summary(submission.error_message)


def submission_status(*, submission: Submission, jobs: list[EvaluationJob] | None = None,
                      reasons: dict[int, WaitReason] | None = None, detailed: bool = False) -> dict[str, Any]:
    """What the submission page and API show; ``jobs``: its jobs with task and runner, when the
    caller has them already; ``reasons``: why its waiting jobs wait, by job id (None: work them
    out here, a fixed number of queries; pass ``{}`` to leave them out); ``detailed``: whether the
    viewer may read failures in full (``Submission.details_visible_to``), else summaries only."""
    jobs = list(submission.jobs.select_related("task", "runner")) if jobs is None else jobs
    reasons = job_wait_reasons(jobs=jobs) if reasons is None else reasons
    done = sum(1 for j in jobs if j.has_ended)
    progress = (sum(1.0 if j.has_ended else j.progress for j in jobs) / len(jobs)) if jobs else 0.0
    return {
        "id": submission.pk,
        "name": submission.name,
        "benchmark": submission.benchmark.slug,
        "status": submission.status,
        "error_code": submission.error_code,
        "error_message": submission.error_message if detailed else public_submission_error(
            submission=submission, jobs=jobs),
        "is_baseline": submission.is_baseline,
        "artifact_format": submission.artifact_format,
        "artifact_sha256": submission.artifact_sha256,
        "hparams": submission.hparams,
        "progress": round(progress, 4),
        "jobs_done": done,
        "jobs_total": len(jobs),
        "jobs": [job_summary(j, reasons.get(j.pk), detailed=detailed) for j in jobs],
        "created_at": submission.created_at.isoformat(),
        "finished_at": submission.finished_at.isoformat() if submission.finished_at else None,
    }


def comparison(*, submissions: list[Submission]) -> dict[str, Any]:
    """Per task, every metric of each submission and its difference from the first submission's
    (the paired difference: same task, same data, same seeds)."""
    ids = [s.pk for s in submissions]
    jobs = EvaluationJob.objects.filter(submission_id__in=ids).select_related("task").order_by("task__position")
    by_task: dict[str, dict[str, Any]] = {}
    for job in jobs:
        entry = by_task.setdefault(job.task.slug, {
            "slug": job.task.slug, "title": job.task.title, "primary_metric": job.task.primary_metric,
            "higher_is_better": job.task.higher_is_better, "results": {}, "curves": {}, "states": {},
        })
        result = job.result or {}
        entry["results"][job.submission_id] = result.get("metrics", {})
        entry["curves"][job.submission_id] = result.get("curves", {})
        entry["states"][job.submission_id] = job.state
    tasks = []
    for entry in by_task.values():
        metric_names: list[str] = [entry["primary_metric"]]
        for metrics in entry["results"].values():
            metric_names += [m for m in metrics if m not in metric_names]
        rows = []
        for metric in metric_names:
            values = [entry["results"].get(i, {}).get(metric) for i in ids]
            base = values[0]
            diffs = [None if v is None or base is None else v - base for v in values]
            best = None
            known = [v for v in values if v is not None]
            if known and metric == entry["primary_metric"]:
                best = max(known) if entry["higher_is_better"] else min(known)
            rows.append({"metric": metric, "cells": [{"value": v, "diff": d, "best": v is not None and v == best}
                                                      for v, d in zip(values, diffs, strict=False)]})
        entry["rows"] = rows
        entry["state_list"] = [entry["states"].get(i, "-") for i in ids]
        tasks.append(entry)
    return {"ids": ids, "tasks": tasks}


# --------------------------------------------------------------------------------------------
# Denoising crops (runner/tracks/denoise.py puts them in result.breakdown.samples)
# --------------------------------------------------------------------------------------------
SAMPLE_KINDS = ("noisy", "denoised", "clean")
PNG_PREFIX = "data:image/png;base64,"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _number(value: Any) -> float | None:
    return finite_float(value)


def denoising_samples(*, jobs: list[EvaluationJob]) -> list[dict[str, Any]]:
    """Per denoising task (succeeded jobs, catalogue order): the crops its result carries, each
    with the PSNR of the noisy and the denoised crop. Malformed entries are left out."""
    tasks = []
    for job in sorted(jobs, key=lambda j: j.task.position):
        samples = ((job.result or {}).get("breakdown") or {}).get("samples")
        if track_of(job.task.slug) != "denoise" or not isinstance(samples, list):
            continue
        rows = []
        for index, sample in enumerate(samples):
            if not isinstance(sample, dict) or not isinstance(sample.get("png"), dict):
                continue
            if not all(isinstance(sample["png"].get(k), str) for k in SAMPLE_KINDS):
                continue
            box = sample.get("box") if isinstance(sample.get("box"), list) else []
            rows.append({
                "index": index,
                "stem": str(sample.get("stem", ""))[:80],
                "box": [int(v) for v in box[:3] if isinstance(v, int)],
                "psnr": {"noisy": _number(sample.get("psnr_noisy")), "denoised": _number(sample.get("psnr_denoised")),
                         "clean": None},
                "psnr_image": _number(sample.get("psnr_image")),
            })
        if rows:
            tasks.append({"job_id": job.pk, "slug": job.task.slug, "title": job.task.title, "samples": rows,
                          "kinds": SAMPLE_KINDS})
    return tasks


def denoising_sample_png(*, job: EvaluationJob, index: int, kind: str) -> bytes | None:
    """The PNG bytes of one crop of a job's result; None when there is no such well-formed crop."""
    samples = ((job.result or {}).get("breakdown") or {}).get("samples")
    if kind not in SAMPLE_KINDS or not isinstance(samples, list) or not 0 <= index < len(samples):
        return None
    sample = samples[index]
    uri = sample.get("png", {}).get(kind) if isinstance(sample, dict) and isinstance(sample.get("png"), dict) else None
    if not isinstance(uri, str) or not uri.startswith(PNG_PREFIX):
        return None
    try:
        data = base64.b64decode(uri[len(PNG_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if data.startswith(PNG_MAGIC) else None
