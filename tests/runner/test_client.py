"""The runner's HTTP client against a stand-in site: claims, heartbeats, checked downloads, and
retries only where retrying can help."""
from __future__ import annotations

import hashlib
import json
import socket
import threading
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from runner.client import SiteClient, SiteConflict, SiteError, SiteUnreachable
from runner.spec import (
    MAX_FAILURE_MESSAGE_CHARS,
    MAX_LOG_TAIL_CHARS,
    MAX_PROGRESS_MESSAGE_CHARS,
    ErrorKind,
    EvaluationError,
    make_result,
)

from . import sources
from .fakesite import TOKEN


def test_claiming_a_job_returns_its_spec_and_a_second_claim_gets_none(site, client):
    site.add_job(7, "opt-f2", sources.SGD, {"lr": 0.01})
    spec = client.claim(7, ["sklearn-digits"], pools=["cpu"])
    assert spec.job_id == 7 and spec.attempt == 1 and spec.task.slug == "opt-f2"
    assert spec.task.params["function"] == "f2" and spec.submission.hparams == {"lr": 0.01}
    assert site.claims[-1] == {"version": "0.1.0", "pools": ["cpu"], "datasets": ["sklearn-digits"]}
    assert client.claim(7, []) is None


def test_every_request_carries_the_runner_token_as_a_bearer_token(site):
    site.add_job(1, "opt-f1", sources.SGD)
    with SiteClient(site.url, "a-revoked-token", backoff_s=0.01) as stranger:
        with pytest.raises(SiteError) as caught:
            stranger.claim(1, [])
    assert caught.value.status_code == 401 and "revoked" in str(caught.value)
    assert len(site.calls) == 1  # a 4xx is never retried


def test_a_heartbeat_is_true_while_the_attempt_is_live_and_false_once_the_site_takes_it_back(site, client):
    job = site.add_job(3, "opt-f1", sources.SGD)
    spec = client.claim(3, [])
    assert client.heartbeat(3, spec.attempt, 0.25, "step 75/300") is True
    assert job.heartbeats[-1] == {"attempt": 1, "progress": 0.25, "message": "step 75/300"}
    job.heartbeat_status = 409
    assert client.heartbeat(3, spec.attempt, 0.5) is False


def test_a_downloaded_artifact_matches_its_checksum(site, client, tmp_path):
    site.add_job(4, "opt-f1", sources.SGD)
    spec = client.claim(4, [])
    digest = client.download_artifact(4, spec.attempt, tmp_path / "artifact",
                                      expected_sha256=spec.submission.artifact_sha256)
    assert (tmp_path / "artifact").read_bytes() == sources.SGD
    assert digest == hashlib.sha256(sources.SGD).hexdigest()


def test_an_artifact_whose_bytes_do_not_match_the_header_is_a_download_failure_and_is_removed(site, client, tmp_path):
    site.add_job(5, "opt-f1", sources.SGD, announced_sha256="0" * 64)
    spec = client.claim(5, [])
    with pytest.raises(EvaluationError) as caught:
        client.download_artifact(5, spec.attempt, tmp_path / "artifact", expected_sha256=spec.submission.artifact_sha256)
    assert caught.value.kind == ErrorKind.DOWNLOAD_FAILED and "X-Artifact-SHA256" in caught.value.message
    assert not (tmp_path / "artifact").exists()


def test_an_artifact_that_differs_from_the_job_spec_is_a_download_failure(site, client, tmp_path):
    site.add_job(6, "opt-f1", sources.SGD, spec_sha256="f" * 64)
    spec = client.claim(6, [])
    with pytest.raises(EvaluationError) as caught:
        client.download_artifact(6, spec.attempt, tmp_path / "artifact", expected_sha256=spec.submission.artifact_sha256)
    assert caught.value.kind == ErrorKind.DOWNLOAD_FAILED and "job spec" in caught.value.message


def test_server_errors_are_retried_with_backoff_until_the_site_answers(site, client):
    site.add_job(8, "opt-f1", sources.SGD)
    site.one_off = [503, 502]
    spec = client.claim(8, [])
    assert spec is not None and spec.attempt == 1
    assert site.paths_called().count("/api/runner/v1/jobs/8/claim/") == 3


def test_a_download_interrupted_by_server_errors_is_retried(site, client, tmp_path):
    site.add_job(9, "opt-f1", sources.SGD)
    spec = client.claim(9, [])
    site.one_off = [500]
    client.download_artifact(9, spec.attempt, tmp_path / "artifact", expected_sha256=spec.submission.artifact_sha256)
    assert (tmp_path / "artifact").read_bytes() == sources.SGD


def test_client_errors_are_never_retried(site, client):
    site.add_job(10, "opt-f1", sources.SGD)
    site.one_off = [400]
    with pytest.raises(SiteError) as caught:
        client.claim(10, [])
    assert caught.value.status_code == 400
    assert site.paths_called() == ["/api/runner/v1/jobs/10/claim/"]


def test_an_unreachable_site_is_given_up_on_after_a_bounded_number_of_tries():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tries = []
    with SiteClient(f"http://127.0.0.1:{port}", TOKEN, retries=3, backoff_s=0.01, sleep=tries.append) as c:
        with pytest.raises(SiteUnreachable) as caught:
            c.heartbeat(1, 1, 0.5)
    assert "after 4 tries" in str(caught.value)
    assert tries == [0.01, 0.02, 0.04]  # exponential backoff between the 4 tries


def test_a_result_that_breaks_the_spec_is_refused_and_a_valid_one_is_recorded(site, client):
    job = site.add_job(11, "opt-f1", sources.SGD)
    spec = client.claim(11, [])
    with pytest.raises(SiteError) as caught:
        client.post_result(11, spec.attempt, make_result("opt-f1", {"final_x": -0.3}), "log")
    assert caught.value.status_code == 400 and "lacks final_loss" in str(caught.value)
    good = make_result("opt-f1", {"final_x": -0.3, "final_loss": 0.0, "min_loss": 0.0},
                       curves={"trajectory": {"step": [0], "x": [-0.3], "loss": [0.0]}})
    assert client.post_result(11, spec.attempt, good, "all fine")["state"] == "succeeded"
    assert job.results[0]["log_tail"] == "all fine"


def test_a_failure_is_reported_with_its_kind_and_a_late_one_is_a_conflict(site, client):
    job = site.add_job(12, "opt-f1", sources.SGD)
    spec = client.claim(12, [])
    client.post_failure(12, spec.attempt, ErrorKind.TIMEOUT, "ran past its time limit", "tail")
    assert job.failures == [{"attempt": 1, "kind": "timeout", "message": "ran past its time limit", "log_tail": "tail",
                             "repeats": False}]
    with pytest.raises(SiteConflict):
        client.download_artifact(12, spec.attempt, "/tmp/never-written")



def test_what_a_runner_reports_is_trimmed_to_the_sizes_of_the_wire_contract(site, client):
    job = site.add_job(13, "opt-f1", sources.SGD)
    spec = client.claim(13, [])
    client.heartbeat(13, spec.attempt, 0.5, "m" * (MAX_PROGRESS_MESSAGE_CHARS + 50))
    client.post_failure(13, spec.attempt, ErrorKind.TIMEOUT, "f" * MAX_FAILURE_MESSAGE_CHARS + "cut",
                        "cut" + "t" * MAX_LOG_TAIL_CHARS)
    assert job.heartbeats[-1]["message"] == "m" * MAX_PROGRESS_MESSAGE_CHARS
    assert job.failures[-1]["message"] == "f" * MAX_FAILURE_MESSAGE_CHARS  # its first characters
    assert job.failures[-1]["log_tail"] == "t" * MAX_LOG_TAIL_CHARS  # its last

def test_a_node_heartbeat_reports_version_pools_and_datasets(site, client):
    client.node_heartbeat("0.1.0", ["cpu", "gpu"], ["cifar-10-batches-py"])
    assert site.node_heartbeats == [{"version": "0.1.0", "pools": ["cpu", "gpu"], "datasets": ["cifar-10-batches-py"]}]


class _BusySite:
    """A site that answers each request with the next (status, headers) it was given, then 200."""

    def __init__(self, answers: list[tuple[int, dict[str, str]]]):
        self.answers = list(answers)
        self.calls = 0
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                site.calls += 1
                status, headers = site.answers.pop(0) if site.answers else (200, {})
                data = json.dumps({"detail": "busy"} if status != 200 else {"name": "node"}).encode()
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                                   **headers}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = "http://{}:{}".format(*self.server.server_address[:2])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_busy_site_is_retried_after_the_wait_its_retry_after_asks_for_capped_at_the_longest_backoff():
    busy = _BusySite([(429, {"Retry-After": "3"}),
                      (503, {"Retry-After": format_datetime(datetime(2000, 1, 1, tzinfo=UTC), usegmt=True)}),
                      (503, {"Retry-After": "3600"}),
                      (429, {})])
    waits: list[float] = []
    try:
        with SiteClient(busy.url, TOKEN, retries=4, backoff_s=0.5, max_backoff_s=60, sleep=waits.append) as c:
            c.node_heartbeat("0.1.0", ["cpu"], [])
    finally:
        busy.close()
    # 3 s as asked; a date already past: at once; an hour: capped at 60 s; no header: the backoff (4th try)
    assert waits == [3.0, 0.0, 60, 4.0] and busy.calls == 5


def test_a_site_that_stays_busy_is_given_up_on_with_its_last_answer():
    busy = _BusySite([(429, {"Retry-After": "1"})] * 3)
    waits: list[float] = []
    try:
        with SiteClient(busy.url, TOKEN, retries=2, sleep=waits.append) as c:
            with pytest.raises(SiteUnreachable) as caught:
                c.node_heartbeat("0.1.0", ["cpu"], [])
    finally:
        busy.close()
    assert "after 3 tries: HTTP 429: busy" in str(caught.value) and waits == [1.0, 1.0]
