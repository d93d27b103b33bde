"""How a job ended, in words, and what of a failure each viewer sees.

A runner's error message can carry a submission's internals: a TorchScript traceback keeps the
absolute paths of the uploader's machine in its debug information, a Python one the layout of
the runner. Visitors get the error kind and :func:`error_summary` (one line, no paths); the
submission's owner and staff get the whole message and the log tail."""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from runner.spec import ErrorKind

from .models import EvaluationJob

SUMMARY_MAX_CHARS = 200
PATH_PLACEHOLDER = "<path>"

_STOP = r"""\s'"`,;:()<>\[\]{}|"""
# absolute paths: POSIX (/home/a/b.py), home-relative (~/b.py), Windows drive (C:\x) and UNC (\\host\share),
# file:// URLs. Not a slash inside a word or number (km/h, 3/4).
_PATH = re.compile(
    rf"(?:(?:file://(?=/)|(?<![\w.~/\\]))~?/[^{_STOP}/]+(?:/[^{_STOP}/]*)*"
    rf"|(?<![\w])[A-Za-z]:\\[^{_STOP}]*"
    rf"|(?<![\w\\])\\\\[^{_STOP}]+)"
)
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit|Interrupt)\b.*")
_CPU_TIME = re.compile(r"more than (\d+(?:\.\d+)?) s of CPU time")
_WALL_TIME = re.compile(r"time limit of (\d+(?:\.\d+)?) s")


def scrub_paths(text: str) -> str:
    """``text`` with every absolute file path replaced by ``<path>``."""
    return _PATH.sub(PATH_PLACEHOLDER, text)


def error_summary(message: str) -> str:
    """One line of an error message that is safe to show anyone: the runner's own first line (or,
    for a bare traceback, its last exception line), paths replaced, at most 200 characters."""
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[0]
    if line.startswith("Traceback"):
        raised = [candidate for candidate in lines if _EXCEPTION_LINE.match(candidate)]
        line = raised[-1] if raised else "the submission raised an error (traceback withheld)"
    line = " ".join(scrub_paths(line).split())
    return line if len(line) <= SUMMARY_MAX_CHARS else line[: SUMMARY_MAX_CHARS - 1].rstrip() + "…"


def job_outcome(job: EvaluationJob) -> str | None:
    """How an ended job ended, for the place its progress text stood while it ran: "finished",
    "timed out after 600 s", "failed: out of memory" (its error kind in words; the error column
    gives the summary), "cancelled" (with its reason). None while it has not ended (a job waiting
    for a retry has not)."""
    if job.state == EvaluationJob.State.SUCCEEDED:
        return "finished"
    if job.state == EvaluationJob.State.CANCELLED:
        if job.skipped_after:
            return job.error_message
        reason = error_summary(job.error_message)
        return f"cancelled: {reason}" if reason and reason != "cancelled" else "cancelled"
    if job.state != EvaluationJob.State.FAILED:
        return None
    if job.error_kind == ErrorKind.TIMEOUT:
        # the limit the runner applied, as its message states it; else the task's
        cpu, wall = _CPU_TIME.search(job.error_message), _WALL_TIME.search(job.error_message)
        if cpu:
            return f"timed out after {cpu.group(1)} s of CPU time"
        seconds = wall.group(1) if wall else job.task.time_limit_s
        return f"timed out after {seconds} s" if seconds else "timed out"
    return f"failed: {job.error_kind.replace('_', ' ')}" if job.error_kind else "failed"


def failures_text(jobs: Iterable[EvaluationJob], describe: Callable[[EvaluationJob], str]) -> str:
    """How a submission's unfinished tasks ended, in one line: ``opt-f1: <describe(job)>`` per
    failed or cancelled task, joined by "; ". Tasks skipped for a failure certain to recur are
    named after it: "failed on opt-f1: …; opt-f2, opt-f3 skipped: same failure as opt-f1"."""
    jobs = [job for job in jobs if job.state != EvaluationJob.State.SUCCEEDED]
    skipped: dict[str, list[str]] = {}
    for job in jobs:
        if job.skipped_after:
            skipped.setdefault(job.skipped_after, []).append(job.task.slug)
    parts = []
    for job in jobs:
        if job.skipped_after:
            continue
        slug = job.task.slug
        parts.append(f"{'failed on ' if slug in skipped else ''}{slug}: {describe(job)}")
        if slug in skipped:
            parts.append(f"{', '.join(skipped.pop(slug))} {EvaluationJob.SKIPPED_PREFIX}{slug}")
    parts += [f"{', '.join(slugs)} {EvaluationJob.SKIPPED_PREFIX}{slug}" for slug, slugs in skipped.items()]
    return "; ".join(parts)
