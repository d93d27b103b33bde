"""The `leaderboard` command, run as a user runs it (a process), against a server answering what
the leaderboard API never does: JSON of another shape (another version, another site), JSON
nested past the parser's limit, and a submission that vanished. Each ends in one line on stderr
naming the problem and exit status 1, never a traceback."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

ANSWERS: dict[str, tuple[int, bytes]] = {
    "list": (200, b"[]"),
    "empty": (200, b"{}"),
    "string": (200, b'"maintenance"'),
    "null-jobs": (200, json.dumps({"id": 7, "name": "n", "status": "running", "jobs": None}).encode()),
    "deep": (200, b"[" * 100_000 + b"]" * 100_000),
    "vanished": (404, b'{"detail": "No Submission matches the given query."}'),
}


@pytest.fixture
def odd_server() -> Iterator[tuple[str, dict[str, str]]]:
    """A server answering every GET with ``ANSWERS[mode["answer"]]``; (its URL, mode)."""
    mode = {"answer": "list"}

    class Odd(BaseHTTPRequestHandler):
        def log_message(self, *args):
            """Silent: the test reads the answers, not the server's request log."""

        def do_GET(self):
            status, body = ANSWERS[mode["answer"]]
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Odd)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", mode
    server.shutdown()
    server.server_close()


def leaderboard(server: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LEADERBOARD_SERVER": server, "LEADERBOARD_TOKEN": "t", "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "leaderboard_client", *args], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("answer", ["list", "empty", "string", "null-jobs"])
@pytest.mark.parametrize("command", [("status", "7"), ("results", "7"), ("board", "digits")])
def test_an_answer_of_another_shape_is_one_line_and_exit_1(odd_server, tmp_path, answer, command):
    server, mode = odd_server
    mode["answer"] = answer
    done = leaderboard(server, tmp_path, *command)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error: the site's answer is not what leaderboard-client"), done.stderr
    assert "is the server a leaderboard site of a matching version?" in done.stderr


def test_json_nested_past_the_parsers_limit_is_not_json(odd_server, tmp_path):
    server, mode = odd_server
    mode["answer"] = "deep"
    done = leaderboard(server, tmp_path, "status", "7")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"GET submissions/7/: {server} answered HTTP 200 but not in JSON" in done.stderr


def test_a_vanished_submission_is_named_with_why_it_may_be_gone(odd_server, tmp_path):
    server, mode = odd_server
    mode["answer"] = "vanished"
    done = leaderboard(server, tmp_path, "status", "7")
    assert done.returncode == 1
    assert done.stderr.strip() == (f"error: submission #7: No Submission matches the given query. (deleted, "
                                   f"private to another account, or not a submission of {server})")
