"""End to end, the researcher's path: `leaderboard login` and `leaderboard submit --wait` run as
real processes (the installed console script) against the live site, while a real `runner work`
process (Celery on Redis) claims the jobs and evaluates the optimizer in its sandbox. The command
shows each task's progress and its exit status says how the submission ended; a 429 with
Retry-After on its upload is waited out."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from leaderboard.accounts.models import ApiToken
from leaderboard.submissions.models import Submission
from tests.e2e import test_worker_end_to_end as worker_e2e
from tests.integration.api import test_client as client_tests

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# The runner processes, the Redis broker and the short leases of the worker's end-to-end tests.
runners, redis_url, lifecycle_settings = worker_e2e.runners, worker_e2e.redis_url, worker_e2e.lifecycle_settings
# The proxy that answers one request with 429 or 503 and a Retry-After (the client's own tests).
Throttling, throttling = client_tests.Throttling, client_tests.throttling

LEADERBOARD_BIN = Path(sys.executable).parent / "leaderboard"
FAILING_OPTIMIZER = b'''
import torch


class Exploding(torch.optim.SGD):
    def step(self, closure=None):
        raise ValueError("this optimizer refuses to step")


def make_optimizer(params, lr=0.05):
    return Exploding(params, lr=lr)
'''


@pytest.fixture
def leaderboard(live_server, alice, tmp_path):
    """Run the installed `leaderboard` command logged in as alice (a private config folder)."""
    assert LEADERBOARD_BIN.exists(), f"{LEADERBOARD_BIN} is missing: pip install -e '.[client]' installs it"
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE", "LEADERBOARD_SERVER", "LEADERBOARD_TOKEN")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")

    def run(*args: str, timeout: float = 300, **extra_env: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(LEADERBOARD_BIN), *args], capture_output=True, text=True, timeout=timeout,
                              env={**env, **extra_env}, stdin=subprocess.DEVNULL)

    token = ApiToken.issue(user=alice, name="e2e")[1]
    login = run("login", "--server", live_server.url, LEADERBOARD_TOKEN=token)
    assert login.returncode == 0, login.stderr
    return run


def test_submit_wait_shows_each_tasks_progress_and_exits_0_when_the_runner_finished_it(
        leaderboard, redis_url, runners, lifecycle_settings, tmp_path):
    node = runners("node-client", redis_url)
    artifact = tmp_path / "fast_sgd.py"
    artifact.write_bytes(worker_e2e.FAST_OPTIMIZER)
    done = leaderboard("submit", "--benchmark", "opt-synthetic", str(artifact), "--hparams", '{"lr": 0.05}',
                       "--wait", "--poll", "0.5", "--timeout", "240")
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{node.tail()}"
    sub = Submission.objects.get()
    assert sub.status == Submission.Status.FINISHED and sub.name == "fast_sgd"
    for task in ("opt-f1", "opt-f2", "opt-f3"):
        assert f"{task}: succeeded 100%" in done.stderr
    assert f"#{sub.pk} fast_sgd: finished" in done.stderr
    f1 = sub.jobs.get(task__slug="opt-f1").result["metrics"]["final_loss"]
    assert f"{f1:.4g}" in done.stdout  # the results table

    results = leaderboard("results", str(sub.pk), "--format", "csv")
    assert results.returncode == 0 and f"{sub.pk},opt-f1,succeeded,final_loss,{f1!r}," in results.stdout


def test_submit_wait_exits_1_with_the_apis_message_when_the_submission_fails(
        leaderboard, redis_url, runners, lifecycle_settings, tmp_path):
    node = runners("node-client-fail", redis_url)
    artifact = tmp_path / "exploding.py"
    artifact.write_bytes(FAILING_OPTIMIZER)
    failed = leaderboard("submit", "--benchmark", "opt-synthetic", str(artifact), "--wait", "--poll", "0.5",
                         "--timeout", "240")
    sub = Submission.objects.get()
    assert failed.returncode == 1, f"{failed.stdout}\n{failed.stderr}\n{node.tail()}"
    assert sub.status == Submission.Status.FAILED and "this optimizer refuses to step" in sub.error_message
    assert f"error: #{sub.pk} failed: {sub.error_message}" in failed.stderr


def test_submit_wait_exits_1_when_the_site_rejects_the_upload(leaderboard, catalogue, tmp_path):
    artifact = tmp_path / "nothing.py"
    artifact.write_text("x = 1\n")
    rejected = leaderboard("submit", "--benchmark", "opt-synthetic", str(artifact), "--wait", "--timeout", "60")
    assert rejected.returncode == 1
    assert rejected.stderr.startswith("error: artifact: ") and "make_optimizer" in rejected.stderr
    assert not Submission.objects.exists()


def test_the_command_waits_out_a_429_with_retry_after_and_uploads_once(leaderboard, catalogue, throttling, tmp_path):
    """The installed command through a proxy that answers its upload 429 once, Retry-After 1 s."""
    Throttling.method, Throttling.status, Throttling.retry_after = "POST", 429, "1"
    artifact = tmp_path / "fast_sgd.py"
    artifact.write_bytes(worker_e2e.FAST_OPTIMIZER)
    done = leaderboard("submit", "--benchmark", "opt-synthetic", str(artifact), LEADERBOARD_SERVER=throttling)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(Submission.objects.get().pk)
    assert "trying again in 1 s (1 of 6 tries)" in done.stderr
    assert len(Throttling.refused) == 1 and Throttling.forwarded[-1] - Throttling.refused[0] >= 1.0
