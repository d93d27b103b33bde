"""The `leaderboard` client (leaderboard_client/) against a live site: its commands through click's
runner in this process, the site in pytest-django's live server thread, jobs finished through the
runner API. The end-to-end run with a real `runner work` is tests/e2e/test_client_end_to_end.py."""
from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from leaderboard.accounts.models import ApiToken
from leaderboard.submissions.models import Submission
from leaderboard_client.cli import app
from tests.conftest import OPTIMIZER_SOURCE

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cli(tmp_path, live_server, monkeypatch):
    """Run `leaderboard ARGS` with a private config folder, logged in to nobody."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("LEADERBOARD_SERVER", "LEADERBOARD_TOKEN"):
        monkeypatch.delenv(name, raising=False)

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None):
        return CliRunner().invoke(app, list(args), input=input, env=env)

    return run


@pytest.fixture
def token(alice):
    return ApiToken.issue(user=alice, name="cli")[1]


@pytest.fixture
def logged_in(cli, live_server, token, catalogue):
    result = cli("login", "--server", live_server.url, input=f"{token}\n")
    assert result.exit_code == 0, result.output
    return cli


@pytest.fixture
def optimizer_file(tmp_path):
    path = tmp_path / "my_sgd.py"
    path.write_bytes(OPTIMIZER_SOURCE)
    return path


def test_login_keeps_the_token_in_a_file_only_its_owner_can_read_and_never_prints_it(cli, live_server, token,
                                                                                       tmp_path):
    result = cli("login", "--server", live_server.url + "/", input=f"{token}\n")
    assert result.exit_code == 0, result.output
    saved = tmp_path / "config" / "leaderboard" / "credentials.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text()) == {"server": live_server.url, "token": token}
    assert token not in result.output and token[:8] not in result.output
    assert f"Logged in to {live_server.url}" in result.output


def test_a_revoked_token_is_refused_at_login_in_the_apis_words_and_nothing_is_saved(cli, live_server, token,
                                                                                     tmp_path):
    ApiToken.objects.all().delete()
    result = cli("login", "--server", live_server.url, input=f"{token}\n")
    assert result.exit_code == 1
    assert "error: Invalid or revoked token." in result.output
    assert not (tmp_path / "config" / "leaderboard" / "credentials.json").exists()


def test_a_saved_login_readable_by_others_is_refused_rather_than_used(logged_in, tmp_path):
    saved = tmp_path / "config" / "leaderboard" / "credentials.json"
    saved.chmod(0o644)
    result = logged_in("submit", "--benchmark", "opt-synthetic", str(saved))
    assert result.exit_code == 1 and "is readable by others (mode 644)" in result.output


def test_benchmarks_lists_each_benchmark_with_its_tasks(logged_in):
    result = logged_in("benchmarks", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {"benchmark": "opt-synthetic", "kind": "optimizer", "task": "opt-f2"}.items() <= next(
        r for r in rows if r["task"] == "opt-f2").items()
    table = logged_in("benchmarks").stdout  # no runner has registered: every benchmark warns, under the table
    assert "opt-synthetic" in table
    assert "warning: opt-synthetic: No runner of pool cpu online (none has ever reported)" in table


def test_a_submission_is_followed_from_upload_to_its_results_and_its_board_row(
        logged_in, optimizer_file, alice, runner_api, finish_job):
    result = logged_in("submit", "--benchmark", "opt-synthetic", str(optimizer_file), "--hparams", '{"lr": 0.05}',
                       "--name", "cli-sgd")
    assert result.exit_code == 0, result.output
    sub = Submission.objects.get(pk=int(result.stdout.strip()))
    assert (sub.owner, sub.name, sub.hparams, sub.status) == (alice, "cli-sgd", {"lr": 0.05}, "queued")

    status = logged_in("status", str(sub.pk))
    assert status.exit_code == 0 and f"#{sub.pk} cli-sgd on opt-synthetic: queued (0/3 tasks done" in status.stdout

    losses = {"opt-f1": 0.011, "opt-f2": 0.022, "opt-f3": 0.033}
    for job in sub.jobs.select_related("task"):
        finish_job(runner_api, job, final_loss=losses[job.task.slug])

    as_csv = list(csv.DictReader(io.StringIO(logged_in("results", str(sub.pk), "--format", "csv").stdout)))
    final = {r["task"]: float(r["value"]) for r in as_csv if r["metric"] == "final_loss"}
    assert final == losses
    assert {r["state"] for r in as_csv} == {"succeeded"}
    as_json = json.loads(logged_in("results", str(sub.pk), "-f", "json").stdout)
    assert {(r["task"], r["metric"], r["value"]) for r in as_json if r["primary"]} == {
        (t, "final_loss", v) for t, v in losses.items()}
    table = logged_in("results", str(sub.pk)).stdout
    assert "opt-f2" in table and "0.022" in table and "finished" in table

    board = json.loads(logged_in("board", "opt-synthetic", "--task", "opt-f2", "-f", "json").stdout)
    assert [(r["rank"], r["submission_id"], r["value"]) for r in board] == [(1, sub.pk, 0.022)]


def test_submit_wait_exits_zero_once_the_submission_finished(logged_in, optimizer_file, runner_api, finish_job):
    """--wait in this process, with the jobs finished from a thread while it polls."""

    def finish_all():
        deadline = time.time() + 30
        while time.time() < deadline and not Submission.objects.filter(status="queued").exists():
            time.sleep(0.2)
        for job in Submission.objects.get().jobs.select_related("task"):
            finish_job(runner_api, job)

    worker = threading.Thread(target=finish_all)
    worker.start()
    result = logged_in("submit", "-b", "opt-synthetic", str(optimizer_file), "--wait", "--poll", "0.2",
                       "--timeout", "60")
    worker.join()
    assert result.exit_code == 0, result.output
    assert "opt-f3: succeeded 100%" in result.stderr and "finished" in result.stderr
    assert "final_loss" in result.stdout


def test_an_upload_the_site_refuses_exits_1_with_the_apis_own_message(logged_in, optimizer_file):
    result = logged_in("submit", "--benchmark", "no-such-benchmark", str(optimizer_file))
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: benchmark: Object with slug=no-such-benchmark does not exist."
    assert not Submission.objects.exists()


def test_the_daily_quota_is_the_apis_message_at_once_not_retried(logged_in, optimizer_file, settings):
    settings.SUBMISSIONS_PER_DAY = 0
    started = time.monotonic()
    result = logged_in("submit", "--benchmark", "opt-synthetic", str(optimizer_file))
    assert result.exit_code == 1 and time.monotonic() - started < 5
    assert result.stderr.strip() == "error: You have used your 0 submissions for the last 24 hours; try again later."
    assert not Submission.objects.exists()


def test_hparams_that_are_not_a_json_object_are_a_usage_error_naming_the_option(logged_in, optimizer_file):
    result = logged_in("submit", "--benchmark", "opt-synthetic", str(optimizer_file), "--hparams", "lr=0.1")
    assert result.exit_code == 2 and "--hparams is not valid JSON" in result.stderr
    result = logged_in("submit", "--benchmark", "opt-synthetic", str(optimizer_file), "--hparams", "[1]")
    assert result.exit_code == 2 and "--hparams must be a JSON object" in result.stderr


def test_a_private_submission_is_read_by_its_owner_and_is_no_submission_to_a_visitor(
        logged_in, optimizer_file, live_server, tmp_path):
    result = logged_in("submit", "--benchmark", "opt-synthetic", str(optimizer_file), "--private")
    sub_id = result.stdout.strip()
    assert Submission.objects.get(pk=int(sub_id)).visibility == "private"
    assert logged_in("status", sub_id).exit_code == 0
    visitor = logged_in("status", sub_id, env={"XDG_CONFIG_HOME": str(tmp_path / "nobody"),
                                               "LEADERBOARD_SERVER": live_server.url})
    assert visitor.exit_code == 1 and visitor.stderr.strip() == (
        f"error: submission #{sub_id}: No such submission. (deleted, private to another account, or not a "
        f"submission of {live_server.url})")


class Throttling(BaseHTTPRequestHandler):
    """A proxy in front of the live site that answers the first ``method`` request with ``status``
    and a Retry-After of ``retry_after`` seconds, then forwards every request."""

    upstream = ""
    method, status, retry_after = "POST", 429, "1"
    refused: list[float] = []
    forwarded: list[float] = []

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.command == self.method and not self.refused:
            self.refused.append(time.monotonic())
            payload = json.dumps({"detail": f"Request was throttled. Expected available in {self.retry_after} "
                                            "seconds."}).encode()
            self.send_response(self.status)
            self.send_header("Retry-After", self.retry_after)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        self.forwarded.append(time.monotonic())
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        answer = httpx.request(self.command, self.upstream + self.path, headers=headers, content=body)
        self.send_response(answer.status_code)
        for key in ("Content-Type", "Retry-After"):
            if key in answer.headers:
                self.send_header(key, answer.headers[key])
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = _forward

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def throttling(live_server):
    """Start the throttling proxy; its URL."""
    Throttling.upstream, Throttling.refused, Throttling.forwarded = live_server.url, [], []
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Throttling)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{proxy.server_address[1]}"
    proxy.shutdown()
    proxy.server_close()


def test_a_429_with_retry_after_is_waited_out_and_the_upload_then_made_once(
        logged_in, optimizer_file, token, throttling):
    Throttling.method, Throttling.status, Throttling.retry_after = "POST", 429, "1"
    result = logged_in("submit", "--benchmark", "opt-synthetic", str(optimizer_file),
                       env={"LEADERBOARD_SERVER": throttling, "LEADERBOARD_TOKEN": token})
    assert result.exit_code == 0, result.output
    assert len(Throttling.refused) == 1 and len(Throttling.forwarded) == 1
    assert Throttling.forwarded[0] - Throttling.refused[0] >= 1.0  # waited what Retry-After asked
    assert Submission.objects.count() == 1
    assert ("note: upload my_sgd.py: Request was throttled. Expected available in 1 seconds.; trying again in 1 s "
            "(1 of 6 tries)") in result.stderr


def test_a_retry_after_longer_than_the_client_waits_is_said_not_slept(logged_in, optimizer_file, token, throttling):
    Throttling.method, Throttling.status, Throttling.retry_after = "POST", 503, "3600"
    started = time.monotonic()
    result = logged_in("submit", "--benchmark", "opt-synthetic", str(optimizer_file),
                       env={"LEADERBOARD_SERVER": throttling, "LEADERBOARD_TOKEN": token})
    assert result.exit_code == 1 and time.monotonic() - started < 5
    assert result.stderr.strip() == ("error: Request was throttled. Expected available in 3600 seconds. "
                                     "(the site asks to retry after 3600 s)")
    assert Throttling.forwarded == [] and not Submission.objects.exists()


def test_a_read_answered_503_once_is_tried_again_after_the_wait_asked(logged_in, token, throttling):
    Throttling.method, Throttling.status, Throttling.retry_after = "GET", 503, "1"
    result = logged_in("benchmarks", "-f", "json", env={"LEADERBOARD_SERVER": throttling, "LEADERBOARD_TOKEN": token})
    assert result.exit_code == 0, result.output
    assert "opt-synthetic" in {b["slug"] for b in json.loads(result.stdout)}
    assert len(Throttling.refused) == 1 and Throttling.forwarded[0] - Throttling.refused[0] >= 1.0


def test_ctrl_c_stops_following_and_says_the_submission_goes_on(live_server, token, catalogue, optimizer_file,
                                                                 tmp_path):
    """The installed command as a process, interrupted while --wait polls (no runner: it stays queued)."""
    command = [str(Path(sys.executable).parent / "leaderboard"), "submit", "-b", "opt-synthetic",
               str(optimizer_file), "--wait", "--poll", "0.2"]
    env = {**os.environ, "LEADERBOARD_SERVER": live_server.url, "LEADERBOARD_TOKEN": token,
           "XDG_CONFIG_HOME": str(tmp_path / "config")}
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    seen = ""
    while ": queued" not in seen:
        line = proc.stderr.readline()
        assert line, f"the command ended before following: {seen}"
        seen += line
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=30)[1]
    sub = Submission.objects.get()
    assert proc.returncode == 130
    assert f"error: stopped following #{sub.pk}; it goes on being evaluated (`leaderboard status {sub.pk}`)" in rest
    assert sub.status == Submission.Status.QUEUED


def test_the_client_imports_only_what_its_extra_installs():
    """`pip install 'leaderboard[client]'` installs httpx, tenacity, typer and rich (and what they
    require); an import of anything else (click, which typer no longer requires) fails there."""
    import ast
    import tomllib

    root = Path(__file__).resolve().parents[3]
    extra = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]["client"]
    allowed = {re.split(r"[<>=\[ ]", d)[0] for d in extra} | {"leaderboard_client"}
    imported = set()
    for path in (root / "leaderboard_client").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                imported.add((node.module or "").split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m != "__future__"}
    assert third_party and third_party <= allowed, third_party - allowed


def test_the_client_imports_neither_django_nor_torch_nor_the_site():
    probe = ("import sys, leaderboard_client.cli; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'django', 'torch', 'leaderboard', 'runner'}))")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout == "[]\n"
