"""The runner's job loop against a stand-in site: what the site hears for a good submission, a
broken one, a job someone else holds, a job the site takes back, and a broken download. Last, a
real `runner work` process fed through a real (filesystem) broker."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from celery import Celery

from runner.spec import EVALUATE_TASK_NAME, ErrorKind, celery_broker_settings, validate_result
from runner.worker import process_job

from . import sources
from .fakesite import TOKEN

pytestmark = pytest.mark.usefixtures("bwrap")


def test_a_good_submission_is_claimed_evaluated_and_its_result_posted_with_progress(site, client, tmp_path):
    job = site.add_job(21, "opt-f1", sources.SLOW_SGD, {"lr": 0.05, "delay": 0.005}, heartbeat_seconds=1)
    outcome = process_job(21, client, data_root=tmp_path, pools=["cpu"])
    assert outcome == "succeeded"
    assert job.failures == [] and len(job.results) == 1
    posted = job.results[0]
    assert posted["attempt"] == 1
    result = validate_result(posted["result"], "opt-f1")
    assert result["env"]["sandbox"] == "bwrap" and result["metrics"]["final_loss"] < 0.49
    assert "attempt 1 of opt-f1" in posted["log_tail"]
    progress = [beat["progress"] for beat in job.heartbeats]
    assert progress and all(0 < p <= 1 for p in progress) and progress == sorted(progress)


def test_a_broken_submission_is_reported_as_a_failure_with_its_kind(site, client, tmp_path):
    job = site.add_job(22, "opt-f1", sources.SYNTAX_ERROR)
    assert process_job(22, client, data_root=tmp_path) == "failed"
    assert job.results == []
    failure = job.failures[0]
    assert failure["kind"] == ErrorKind.INVALID_ARTIFACT and "syntax error at line 4" in failure["message"]
    assert "invalid_artifact" in failure["log_tail"]


def test_a_job_with_a_live_attempt_elsewhere_is_left_alone(site, client, tmp_path):
    site.add_job(23, "opt-f1", sources.SGD, claim_status=409)
    assert process_job(23, client, data_root=tmp_path) == "not_claimed"
    assert site.paths_called() == ["/api/runner/v1/jobs/23/claim/"]


def test_a_job_the_site_takes_back_stops_the_sandboxed_program_and_posts_nothing(site, client, tmp_path):
    job = site.add_job(24, "opt-f1", sources.SLOW_SGD, {"lr": 0.05}, heartbeat_seconds=1, heartbeat_status=409)
    started = time.monotonic()
    assert process_job(24, client, data_root=tmp_path) == "dropped"
    assert time.monotonic() - started < 12  # 300 slow steps would take 15 s or more
    assert job.results == [] and job.failures == []
    assert len(job.heartbeats) == 1


def test_an_artifact_that_fails_its_checksum_is_an_infrastructure_failure(site, client, tmp_path):
    job = site.add_job(25, "opt-f1", sources.SGD, announced_sha256="0" * 64)
    assert process_job(25, client, data_root=tmp_path) == "failed"
    assert job.failures[0]["kind"] == ErrorKind.DOWNLOAD_FAILED


def test_an_unexpected_runner_exception_is_reported_as_a_runner_error_with_its_traceback(site, client, tmp_path):
    job = site.add_job(26, "opt-f1", sources.SGD, params={"function": "f1", "steps": "three hundred"})
    assert process_job(26, client, data_root=tmp_path) == "failed"
    failure = job.failures[0]
    assert failure["kind"] == ErrorKind.RUNNER_ERROR
    assert "ValueError" in failure["message"] and "Traceback" in failure["log_tail"]


def test_runner_work_consumes_a_job_from_the_broker_and_reports_to_the_site(site, tmp_path):
    job = site.add_job(27, "opt-f3", sources.SGD, {"lr": 0.1})
    broker_url = f"filesystem://{tmp_path / 'broker'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    runner_bin = Path(sys.executable).parent / "runner"
    log = tmp_path / "runner.log"
    with open(log, "w") as out:
        worker = subprocess.Popen([str(runner_bin), "work", "--server", site.url, "--token", TOKEN, "--pool", "cpu",
                                   "--data-root", str(tmp_path / "data"), "--broker", broker_url],
                                  stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        sender = Celery("site-under-test", fixups=[])
        sender.conf.update(**celery_broker_settings(broker_url))
        sender.send_task(EVALUATE_TASK_NAME, args=[27], queue="runner.cpu")
        deadline = time.monotonic() + 90
        while not job.results and not job.failures and time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.2)
        assert job.results, f"no result; failures={job.failures}\n{log.read_text()[-3000:]}"
        assert job.results[0]["result"]["task"] == "opt-f3"
        assert site.node_heartbeats and site.node_heartbeats[0]["pools"] == ["cpu"]
    finally:
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, 9)
            worker.wait()
