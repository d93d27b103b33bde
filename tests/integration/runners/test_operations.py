"""What operators rely on: health and readiness probes, Prometheus metrics, runner onboarding."""
from __future__ import annotations

import json

import pytest
from django.core.management import call_command

from leaderboard.runners.models import RegistrationCode, RunnerNode

pytestmark = pytest.mark.django_db


def test_liveness_and_readiness_report_each_dependency(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    body = client.get("/readyz").json()
    assert body["status"] == "ready"
    assert [c["name"] for c in body["checks"]] == ["database", "broker", "storage"]


def test_readiness_fails_with_the_broker_named_when_it_is_down(client, _celery_for_tests):
    app = _celery_for_tests
    working = (app.conf.broker_url, app.conf.broker_transport_options)
    app.conf.broker_url, app.conf.broker_transport_options = "redis://127.0.0.1:1/0", {}
    try:
        response = client.get("/readyz")
    finally:
        app.conf.broker_url, app.conf.broker_transport_options = working
    assert response.status_code == 503
    broker = next(c for c in response.json()["checks"] if c["name"] == "broker")
    assert broker["ok"] is False and "Error" in broker["error"]


def test_metrics_expose_jobs_by_state_queue_depth_and_heartbeats(client, alice, make_submission, runner_api):
    sub = make_submission(alice)
    runner_api.claim(sub.jobs.first().pk)
    text = client.get("/metrics").content.decode()
    assert 'leaderboard_jobs{state="running",queue="runner.cpu"} 1' in text
    assert 'leaderboard_queue_depth{queue="runner.cpu"} 2' in text
    assert 'leaderboard_runner_heartbeat_age_seconds{runner="gpu-node-1"}' in text
    assert "leaderboard_runners_online 1" in text


def test_metrics_can_require_a_token(client, settings):
    settings.METRICS_TOKEN = "s3cret"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200


def test_a_one_time_code_registers_a_runner_exactly_once(client, capsys):
    call_command("createrunner", "lab-box", "--code", "--pool", "gpu")
    code = capsys.readouterr().out.strip()
    response = client.post("/api/runner/v1/register/", json.dumps({"code": code, "name": "lab-box-1"}),
                           content_type="application/json")
    assert response.status_code == 201
    token = response.json()["token"]
    node = RunnerNode.objects.get(name="lab-box-1")
    assert node.pools == ["gpu"] and RegistrationCode.objects.get().runner == node
    claim_ok = client.post("/api/runner/v1/nodes/heartbeat/", "{}", content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {token}")
    assert claim_ok.status_code == 200
    again = client.post("/api/runner/v1/register/", json.dumps({"code": code, "name": "lab-box-2"}),
                        content_type="application/json")
    assert again.status_code == 403 and "unknown, used or expired" in again.json()["detail"]
    assert not RunnerNode.objects.filter(name="lab-box-2").exists()


@pytest.mark.django_db(transaction=True)
def test_runner_register_exchanges_a_code_for_a_token_file_over_http(live_server, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    _, code = RegistrationCode.issue(pools=["gpu", "cpu"])
    token_file = tmp_path / "runner.env"
    runner_bin = Path(sys.executable).parent / "runner"
    result = subprocess.run([str(runner_bin), "register", "--server", live_server.url, "--code", code,
                             "--name", "far-away-gpu", "--token-file", str(token_file)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = dict(line.split("=", 1) for line in token_file.read_text().splitlines())
    assert lines["RUNNER_SERVER"] == live_server.url and lines["RUNNER_POOLS"] == "gpu,cpu"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    from leaderboard.accounts.models import hash_token

    assert RunnerNode.objects.get(name="far-away-gpu").token_hash == hash_token(lines["RUNNER_TOKEN"])
    again = subprocess.run([str(runner_bin), "register", "--server", live_server.url, "--code", code,
                            "--name", "other", "--token-file", str(tmp_path / "x.env")],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "unknown, used or" in again.stdout and "(403)" in again.stdout
