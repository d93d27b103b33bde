"""How the client prints the API's answers: tables (rich) for people, JSON and CSV for programs,
and the live per-task progress of a submission being evaluated.

Pure functions from the API's JSON to rows, plus two progress views: bars on a terminal, one
line per change elsewhere (a CI log, a pipe), so a log shows the same states a terminal did."""
from __future__ import annotations

import csv
import io
import json
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn
from rich.table import Table

ENDED_SUBMISSION = ("finished", "failed", "rejected")
RESULT_COLUMNS = ["submission_id", "task", "state", "metric", "value", "ci95_low", "ci95_high", "primary",
                  "synthetic_data"]
BOARD_COLUMNS = ["rank", "submission_id", "name", "owner", "task", "metric", "value", "ci95_low", "ci95_high",
                 "tied_with_above", "synthetic_data", "submitted_at"]


def fmt(value: Any) -> str:
    """A metric for a table: 4 significant digits, integers as they are."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def result_rows(submission: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (task, metric) of a submission's jobs, the primary metric first in each task;
    a job without metrics (waiting, failed) is one row with an empty metric."""
    rows: list[dict[str, Any]] = []
    for job in submission["jobs"]:
        metrics = job.get("metrics") or {}
        primary = job["primary_metric"]
        names = sorted(metrics, key=lambda m: (m != primary, m))
        base = {"submission_id": submission["id"], "task": job["task"], "state": job["state"],
                "synthetic_data": bool(job.get("synthetic_data"))}
        if not names:
            rows.append({**base, "metric": "", "value": None, "ci95_low": None, "ci95_high": None, "primary": False})
        for name in names:
            ci = (job.get("ci95") or {}).get(name) or [None, None]
            rows.append({**base, "metric": name, "value": metrics[name], "ci95_low": ci[0], "ci95_high": ci[1],
                         "primary": name == primary})
    return rows


def board_rows(board: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for row in board["rows"]:
        ci = row.get("ci95") or [None, None]
        rows.append({"rank": row["rank"], "submission_id": row["submission_id"], "name": row["name"],
                     "owner": row["owner"], "task": row["task"], "metric": row["primary_metric"],
                     "value": row["value"], "ci95_low": ci[0], "ci95_high": ci[1],
                     "tied_with_above": row["tied_with_above"], "synthetic_data": row["synthetic_data"],
                     "submitted_at": row["submitted_at"]})
    return rows


def as_csv(columns: list[str], rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def as_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False)


def interval(low: Any, high: Any) -> str:
    return f"[{fmt(low)}, {fmt(high)}]" if low is not None and high is not None else ""


def results_table(submission: dict[str, Any]) -> Table:
    table = Table(title=f"#{submission['id']} {submission['name']} on {submission['benchmark']}: "
                        f"{submission['status']}")
    for column in ("task", "state", "metric", "value", "95% interval"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for row in result_rows(submission):
        name = f"[bold]{row['metric']}[/bold]" if row["primary"] else row["metric"]
        task = row["task"] + (" (synthetic data)" if row["synthetic_data"] else "")
        table.add_row(task, row["state"], name, fmt(row["value"]), interval(row["ci95_low"], row["ci95_high"]))
    return table


def board_table(board: dict[str, Any]) -> Table:
    better = "higher" if board["higher_is_better"] else "lower"
    table = Table(title=f"{board['benchmark']} / {board['task']}: {board['primary_metric']} ({better} is better), "
                        f"{len(board['rows'])} of {board['total']}")
    for column in ("rank", "id", "name", "owner", board["primary_metric"], "95% interval", ""):
        table.add_column(column, justify="right" if column in ("rank", "id", board["primary_metric"]) else "left")
    for row in board_rows(board):
        notes = ", ".join(n for n, on in (("tied with above", row["tied_with_above"]),
                                           ("synthetic data", row["synthetic_data"])) if on)
        table.add_row(str(row["rank"]), str(row["submission_id"]), row["name"], row["owner"], fmt(row["value"]),
                      interval(row["ci95_low"], row["ci95_high"]), notes)
    return table


def benchmarks_table(benchmarks: list[dict[str, Any]]) -> Table:
    """Slug, kind, title and tasks; the warnings (what no online runner can serve now) are
    :func:`benchmark_warnings`' lines, printed under the table."""
    table = Table(title="Benchmarks")
    for column in ("slug", "kind", "title", "tasks"):
        table.add_column(column)
    for bench in benchmarks:
        table.add_row(bench["slug"], bench["kind"], bench["title"], " ".join(t["slug"] for t in bench["tasks"]))
    return table


def benchmark_warnings(benchmarks: list[dict[str, Any]]) -> list[str]:
    return [f"{bench['slug']}: {warning}" for bench in benchmarks for warning in bench.get("warnings") or []]


def job_note(job: dict[str, Any]) -> str:
    """What a job is doing, in the API's words: its error, its progress message, or why it waits."""
    if job["state"] in ("failed", "cancelled"):
        return job.get("error_summary") or job.get("outcome") or ""
    return job.get("progress_message") or job.get("waiting_reason") or ""


def status_lines(submission: dict[str, Any]) -> list[str]:
    lines = [f"#{submission['id']} {submission['name']} on {submission['benchmark']}: {submission['status']} "
             f"({submission['jobs_done']}/{submission['jobs_total']} tasks done, {submission['progress']:.0%})"]
    if submission.get("error_message"):
        lines.append(f"  error: {submission['error_message']}")
    for job in submission["jobs"]:
        note = job_note(job)
        lines.append(f"  {job['task']}: {job['state']} {job['progress']:.0%}" + (f" - {note}" if note else ""))
    return lines


class ProgressView:
    """The submission's jobs as they run: one bar per task on a terminal, else one line each time
    a job's state, whole percent or message changes. ``update`` takes the API's submission."""

    def __init__(self, console: Console):
        self.console = console
        self.live = console.is_terminal
        self._seen: dict[str, tuple[str, int, str]] = {}
        self._status = ""
        self._bars: dict[str, TaskID] = {}
        self._progress: Progress | None = None
        if self.live:
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                      TextColumn("{task.fields[note]}"), console=console)
            self._progress.start()

    def update(self, submission: dict[str, Any]) -> None:
        if submission["status"] != self._status:
            self._status = submission["status"]
            self.console.print(f"#{submission['id']} {submission['name']}: {self._status}", markup=False,
                               highlight=False)
        for job in submission["jobs"]:
            done = 1.0 if job["state"] == "succeeded" else float(job["progress"])
            note = job_note(job)
            if self._progress is not None:
                label = f"{job['task']} {job['state']}"
                if job["task"] not in self._bars:
                    self._bars[job["task"]] = self._progress.add_task(label, total=1.0, note=note)
                self._progress.update(self._bars[job["task"]], completed=done, description=label, note=note)
                continue
            seen = (job["state"], int(done * 100), note)
            if self._seen.get(job["task"]) != seen:
                self._seen[job["task"]] = seen
                percent = "" if job["state"] in ("failed", "cancelled") else f" {seen[1]}%"
                self.console.print(f"  {job['task']}: {job['state']}{percent}" + (f" - {note}" if note else ""),
                                   markup=False, highlight=False)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
