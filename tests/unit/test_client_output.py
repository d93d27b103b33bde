"""The `leaderboard` client without a site: the live bars a terminal gets, the rows its CSV and
JSON hold, the API's error shapes and Retry-After forms it reads, and what it does when a server
redirects or never answers an upload."""
from __future__ import annotations

import io
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from rich.console import Console

from leaderboard_client.api import ApiError, Client, api_message, retry_after_s
from leaderboard_client.render import RESULT_COLUMNS, ProgressView, as_csv, result_rows


def job(task: str, state: str, progress: float, **extra) -> dict:
    return {"task": task, "state": state, "progress": progress, "primary_metric": "top1", "progress_message": "",
            "waiting_reason": None, "error_summary": "", "outcome": None, "metrics": {}, "ci95": {},
            "synthetic_data": False, **extra}


def submission(status: str, jobs: list[dict]) -> dict:
    return {"id": 7, "name": "net", "benchmark": "cifar10", "status": status, "jobs": jobs}


def test_a_terminal_gets_one_bar_per_task_with_its_state_and_message():
    screen = io.StringIO()
    view = ProgressView(Console(file=screen, force_terminal=True, width=120))
    view.update(submission("running", [job("cifar10", "running", 0.4, progress_message="batch 4/10"),
                                       job("cifar10-c", "dispatched", 0.0, waiting_reason="1 job ahead")]))
    view.update(submission("finished", [job("cifar10", "succeeded", 1.0), job("cifar10-c", "succeeded", 1.0)]))
    view.close()
    text = screen.getvalue()
    assert "━" in text  # rich's bar
    assert "cifar10 running" in text and "batch 4/10" in text and "1 job ahead" in text
    assert "cifar10-c succeeded" in text and "100%" in text and "#7 net: finished" in text


def test_a_pipe_gets_one_line_per_change_and_none_for_a_poll_that_changed_nothing():
    screen = io.StringIO()
    view = ProgressView(Console(file=screen, force_terminal=False))
    running = submission("running", [job("cifar10", "running", 0.404, progress_message="batch 4/10")])
    view.update(running)
    view.update(running)
    view.update(submission("failed", [job("cifar10", "failed", 0.5, error_summary="wrong_output: logits")]))
    assert screen.getvalue().splitlines() == [
        "#7 net: running", "  cifar10: running 40% - batch 4/10", "#7 net: failed",
        "  cifar10: failed - wrong_output: logits"]


def test_results_rows_put_the_primary_metric_first_with_its_interval():
    sub = submission("finished", [job("cifar10", "succeeded", 1.0, metrics={"ece": 0.03, "top1": 91.5},
                                      ci95={"top1": [91.0, 92.0]}, synthetic_data=True)])
    assert as_csv(RESULT_COLUMNS, result_rows(sub)).splitlines() == [
        ",".join(RESULT_COLUMNS),
        "7,cifar10,succeeded,top1,91.5,91.0,92.0,True,True",
        "7,cifar10,succeeded,ece,0.03,,,False,True"]


def test_the_apis_messages_are_read_from_each_shape_it_answers():
    request = httpx.Request("GET", "http://site/api/v1/x/")
    assert api_message(httpx.Response(404, json={"detail": "No such submission."}, request=request)) == \
        "No such submission."
    assert api_message(httpx.Response(400, json={"benchmark": ["Unknown."], "non_field_errors": ["Too big."]},
                                      request=request)) == "benchmark: Unknown.; Too big."
    assert api_message(httpx.Response(400, json=["One.", "Two."], request=request)) == "One. Two."
    assert api_message(httpx.Response(502, text="<html>Bad gateway</html>", request=request)) == (
        "HTTP 502 from http://site/api/v1/x/, which is not the leaderboard API's answer (is the server URL right?)")


def test_retry_after_is_read_as_seconds_or_as_a_date():
    def after(value: str) -> float | None:
        return retry_after_s(httpx.Response(429, headers={"Retry-After": value}))

    assert after("7") == 7.0
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 28 <= after(soon) <= 30
    assert after(format_datetime(datetime(2000, 1, 1, tzinfo=UTC), usegmt=True)) == 0.0
    assert after("soon") is None and retry_after_s(httpx.Response(429)) is None


def test_a_redirect_is_named_not_followed_so_the_token_stays_with_the_site_it_was_given_to():
    seen: list[httpx.Request] = []

    def site(request: httpx.Request) -> httpx.Response:  # an http:// site that sends everyone to https://
        seen.append(request)
        return httpx.Response(301, headers={"Location": "https://lb.example.org" + request.url.path})

    with Client("http://lb.example.org", "lb_secret", transport=httpx.MockTransport(site)) as api:
        with pytest.raises(ApiError, match=r"http://lb.example.org redirects to https://lb.example.org/api/v1/"
                                           r"benchmarks/; log in with the address it names"):
            api.benchmarks()
    assert [r.url.host for r in seen] == ["lb.example.org"] and seen[0].url.scheme == "http"


def test_an_upload_whose_answer_never_comes_is_not_sent_again_and_the_error_says_it_may_have_arrived(tmp_path):
    received: list[str] = []

    class Silent(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            received.append(self.path)
            time.sleep(2)  # past the client's timeout: did the site store it? the client cannot know

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Silent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    artifact = tmp_path / "sgd.py"
    artifact.write_text("def make_optimizer(params): ...\n")
    try:
        with Client(f"http://127.0.0.1:{server.server_address[1]}", "lb_x", timeout_s=0.5,
                    sleep=lambda s: None) as api:
            with pytest.raises(ApiError, match="ReadTimeout .* the site may have received it: look at its My "
                                               "submissions page before sending it again"):
                api.submit(benchmark="opt-synthetic", artifact=artifact, name="sgd")
    finally:
        server.shutdown()
        server.server_close()
    assert received == ["/api/v1/submissions/"]
