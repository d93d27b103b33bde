"""`leaderboard`: log in, submit and follow a submission, read results and boards, from a shell.

Commands are thin: they read the saved login (config.py), call the API (api.py) and print
(render.py). Tables and results go to stdout, progress and errors to stderr. Exit status: 0 on
success; 1 when the API refused (its own message is printed), answered what this client cannot
read (JSON of another shape: one line names what was missing), or, for ``submit --wait``, when the
submission failed or was rejected; 2 for a usage error (a bad option, unreadable --hparams);
3 when ``--wait`` ran out of ``--timeout`` with the submission still running; 130 when Ctrl-C
stopped ``--wait`` (the submission goes on)."""
from __future__ import annotations

import json
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from leaderboard_client import __version__, render
from leaderboard_client.api import ApiError, Client
from leaderboard_client.config import (
    SERVER_ENV,
    TOKEN_ENV,
    Credentials,
    NotLoggedIn,
    credentials_forget,
    credentials_load,
    credentials_path,
    credentials_save,
)

app = typer.Typer(help="Submit to a leaderboard site and read its results (its REST API, /api/v1/).",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3
EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def fail(message: str, code: int = EXIT_REFUSED) -> NoReturn:
    err.print(f"error: {message}", markup=False, highlight=False)
    raise typer.Exit(code)


def note(message: str) -> None:
    err.print(f"note: {message}", markup=False, highlight=False)


def client(*, need_token: bool = True) -> Client:
    """A client for the saved login (or LEADERBOARD_SERVER / LEADERBOARD_TOKEN)."""
    try:
        creds = credentials_load(need_token=need_token)
        return Client(creds.server, creds.token or None, on_retry=note)
    except (NotLoggedIn, ValueError) as exc:
        fail(str(exc))


def call(what: Any) -> Any:
    """Run an API call; an ApiError exits 1 with the API's message (and a hint for a bad token)."""
    try:
        return what()
    except ApiError as exc:
        hint = " (run `leaderboard login` with a valid token)" if exc.status_code in (401, 403) else ""
        fail(f"{exc}{hint}")


@app.command()
def login(
    server: Annotated[str, typer.Option(envvar=SERVER_ENV, prompt="Server URL",
                                        help="The site, e.g. https://leaderboard.example.org")],
    token: Annotated[str, typer.Option(envvar=TOKEN_ENV, prompt="API token (the site's API tokens page)",
                                       hide_input=True, help="Prompted for (hidden) when not given or in "
                                                             f"{TOKEN_ENV}; better not on the command line")],
) -> None:
    """Check the token against the server and save both, readable only by you (mode 0600)."""
    try:
        api = Client(server, token, on_retry=note)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    with api:
        call(api.my_submissions)
    path = credentials_save(Credentials(server=api.server, token=token))
    err.print(f"Logged in to {api.server}; token saved to {path} (mode 0600).", markup=False, highlight=False)


@app.command()
def logout() -> None:
    """Forget the saved login (the token stays valid on the site until you revoke it there)."""
    path = credentials_path()
    err.print(f"Removed {path}." if credentials_forget() else f"No saved login at {path}.", markup=False)


def read_hparams(value: str) -> dict[str, Any]:
    """--hparams: a JSON object, or @FILE holding one."""
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            fail(f"--hparams {value}: cannot read the file: {exc}", EXIT_USAGE)
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        fail(f"--hparams is not valid JSON ({exc}); give an object such as '{{\"lr\": 0.1}}' or @file.json",
             EXIT_USAGE)
    if not isinstance(parsed, dict):
        fail("--hparams must be a JSON object such as '{\"lr\": 0.1}'", EXIT_USAGE)
    return parsed


@app.command()
def submit(
    artifact: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help=(
        "A model exported with torch.export (.pt2) or ONNX (.onnx), TorchScript (.pt), or an optimizer's .py"))],
    benchmark: Annotated[str, typer.Option("--benchmark", "-b", help="Benchmark slug (`leaderboard benchmarks`)")],
    name: Annotated[str | None, typer.Option(help="Shown on the board; default the file's name")] = None,
    hparams: Annotated[str, typer.Option(help="JSON object, or @file.json")] = "{}",
    private: Annotated[bool, typer.Option("--private", help="Only you see it (it stays off public boards)")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Follow it to the end; exit 0 only if it finished")] = False,
    poll: Annotated[float, typer.Option(help="Seconds between status checks with --wait", min=0.2)] = 2.0,
    timeout: Annotated[float | None, typer.Option(help="Give up waiting after this many seconds (exit 3)")] = None,
) -> None:
    """Upload a model or optimizer for evaluation on every task of a benchmark."""
    params = read_hparams(hparams)
    with client() as api:
        created = call(lambda: api.submit(benchmark=benchmark, artifact=artifact, name=name or artifact.stem,
                                          hparams=params, private=private))
        for warning in created.get("warnings") or []:
            err.print(f"warning: {warning}", markup=False, highlight=False)
        err.print(f"Submitted #{created['id']} ({created['artifact_format']}): {api.server}/s/{created['id']}/",
                  markup=False, highlight=False)
        if not wait:
            out.print(created["id"])
            return
        final = follow(api, created["id"], poll_s=poll, timeout_s=timeout)
    finish(final)


def follow(api: Client, submission_id: int, *, poll_s: float, timeout_s: float | None) -> dict[str, Any]:
    """Poll the submission until it ends, showing each task's progress; its last state."""
    view = render.ProgressView(err)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while True:
            submission = call(lambda: api.submission(submission_id))
            view.update(submission)
            if submission["status"] in render.ENDED_SUBMISSION:
                return submission
            if deadline is not None and time.monotonic() > deadline:
                fail(f"#{submission_id} is still {submission['status']} after {timeout_s:g} s; "
                     f"`leaderboard status {submission_id}` follows it", EXIT_TIMEOUT)
            time.sleep(poll_s)
    except KeyboardInterrupt:
        fail(f"stopped following #{submission_id}; it goes on being evaluated (`leaderboard status "
             f"{submission_id}`)", EXIT_INTERRUPTED)
    finally:
        view.close()


def finish(submission: dict[str, Any]) -> None:
    """Print how an ended submission ended; exit 1 unless it finished."""
    if submission["status"] == "finished":
        out.print(render.results_table(submission))
        return
    reason = submission.get("error_message") or "; ".join(
        f"{j['task']}: {render.job_note(j)}" for j in submission["jobs"] if j["state"] == "failed")
    fail(f"#{submission['id']} {submission['status']}: {reason}")


@app.command()
def status(
    submission_id: Annotated[int, typer.Argument(help="The submission's number")],
    as_json: Annotated[bool, typer.Option("--json", help="The API's whole answer")] = False,
) -> None:
    """Where a submission is: its state and each task's progress, wait reason or error."""
    with client(need_token=False) as api:
        submission = call(lambda: api.submission(submission_id))
    if as_json:
        out.print_json(data=submission)
        return
    for line in render.status_lines(submission):
        out.print(line, markup=False, highlight=False)


@app.command()
def results(
    submission_id: Annotated[int, typer.Argument(help="The submission's number")],
    format: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """A submission's metrics per task, with their 95% intervals."""
    with client(need_token=False) as api:
        submission = call(lambda: api.submission(submission_id))
    rows = render.result_rows(submission)
    if format is Format.json:
        print(render.as_json(rows))
    elif format is Format.csv:
        print(render.as_csv(render.RESULT_COLUMNS, rows), end="")
    else:
        out.print(render.results_table(submission))


@app.command()
def board(
    benchmark: Annotated[str, typer.Argument(help="Benchmark slug")],
    task: Annotated[str | None, typer.Option("--task", "-t", help="Task slug; default the benchmark's lead task")] = None,
    limit: Annotated[int, typer.Option(help="Rows (at most 500)", min=1, max=500)] = 50,
    format: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """A benchmark's leaderboard for one task, best first."""
    with client(need_token=False) as api:
        answer = call(lambda: api.leaderboard(benchmark, task=task, limit=limit))
    if format is Format.json:
        print(render.as_json(render.board_rows(answer)))
    elif format is Format.csv:
        print(render.as_csv(render.BOARD_COLUMNS, render.board_rows(answer)), end="")
    else:
        out.print(render.board_table(answer))


@app.command()
def benchmarks(
    format: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """The benchmarks open for submissions, their tasks, and what no runner can serve now."""
    with client(need_token=False) as api:
        answer = call(api.benchmarks)
    if format is Format.table:
        out.print(render.benchmarks_table(answer))
        for line in render.benchmark_warnings(answer):
            out.print(f"warning: {line}", markup=False, highlight=False)
    elif format is Format.json:
        print(render.as_json(answer))
    else:
        rows = [{"benchmark": b["slug"], "kind": b["kind"], "task": t["slug"], "title": t["title"],
                 "primary_metric": t["primary_metric"], "higher_is_better": t["higher_is_better"]}
                for b in answer for t in b["tasks"]]
        print(render.as_csv(["benchmark", "kind", "task", "title", "primary_metric", "higher_is_better"], rows),
              end="")


# What reading an answer of another shape raises (a JSON list where an object belongs, a key
# missing): a server of another version or not this site at all, not a bug of the user's.
UNEXPECTED_ANSWER = (KeyError, TypeError, IndexError, AttributeError)


def main() -> None:
    """The ``leaderboard`` command. An answer this client cannot read exits 1 with one line naming
    what was missing instead of a traceback."""
    try:
        app()
    except UNEXPECTED_ANSWER as exc:
        err.print(f"error: the site's answer is not what leaderboard-client {__version__} reads "
                  f"({type(exc).__name__}: {str(exc)[:120]}); is the server a leaderboard site of a "
                  "matching version? `leaderboard status N --json` prints an answer as it came",
                  markup=False, highlight=False)
        raise SystemExit(EXIT_REFUSED) from None
