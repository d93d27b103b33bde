from __future__ import annotations

from typing import Any

from .models import EvaluationJob, Submission


def job_summary(job: EvaluationJob) -> dict[str, Any]:
    result = job.result or {}
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
        "error_message": job.error_message,
        "metrics": result.get("metrics", {}),
        "ci95": result.get("ci95", {}),
        "env": result.get("env", {}),
        "timing": result.get("timing", {}),
        "claimed_at": job.claimed_at.isoformat() if job.claimed_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def submission_status(*, submission: Submission) -> dict[str, Any]:
    jobs = list(submission.jobs.select_related("task", "runner"))
    done = sum(1 for j in jobs if j.has_ended)
    progress = (sum(1.0 if j.has_ended else j.progress for j in jobs) / len(jobs)) if jobs else 0.0
    return {
        "id": submission.pk,
        "name": submission.name,
        "benchmark": submission.benchmark.slug,
        "status": submission.status,
        "error_code": submission.error_code,
        "error_message": submission.error_message,
        "is_baseline": submission.is_baseline,
        "artifact_format": submission.artifact_format,
        "artifact_sha256": submission.artifact_sha256,
        "hparams": submission.hparams,
        "progress": round(progress, 4),
        "jobs_done": done,
        "jobs_total": len(jobs),
        "jobs": [job_summary(j) for j in jobs],
        "created_at": submission.created_at.isoformat(),
        "finished_at": submission.finished_at.isoformat() if submission.finished_at else None,
    }
