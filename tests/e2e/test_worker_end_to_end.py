"""End to end: the site (live server), a real Redis broker, and real `runner work` processes
(Celery workers) that claim jobs over HTTP and run the submitted optimizer in the sandbox.

These tests kill a runner in the middle of a job and restart the broker, and check that every job
still ends with exactly one result."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis as redis_client

from leaderboard.benchmarks.models import Benchmark
from leaderboard.boards.models import BoardEntry
from leaderboard.jobs.reaper import jobs_reap
from leaderboard.runners.models import RunnerNode
from leaderboard.submissions.models import EvaluationJob, Submission
from runner.spec import celery_broker_settings

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

RUNNER_BIN = Path(sys.executable).parent / "runner"
SLOW_OPTIMIZER = b'''
import time
import torch


class SlowSGD(torch.optim.SGD):
    """Plain SGD that takes its time, so a test can kill the runner in the middle of a job."""

    def step(self, closure=None):
        time.sleep(0.03)
        return super().step(closure)


def make_optimizer(params, lr=0.05):
    return SlowSGD(params, lr=lr)
'''
FAST_OPTIMIZER = b'''
import torch


def make_optimizer(params, lr=0.05):
    return torch.optim.SGD(params, lr=lr)
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pings(port: int) -> bool:
    try:
        return bool(redis_client.Redis(port=port, socket_connect_timeout=1).ping())
    except redis_client.ConnectionError:
        return False


def use_broker(url: str) -> None:
    from leaderboard.celery import app

    conf = celery_broker_settings(url)
    app.conf.broker_url, app.conf.broker_transport_options = conf["broker_url"], conf["broker_transport_options"]


@pytest.fixture
def lifecycle_settings(settings):
    settings.JOB_LEASE_SECONDS = 5
    settings.JOB_HEARTBEAT_SECONDS = 1
    settings.JOB_DISPATCH_TIMEOUT_SECONDS = 60
    return settings


class Runner:
    """A `runner work` process in its own session, so killing it kills its children too."""

    def __init__(self, name: str, server: str, broker: str, tmp: Path):
        node, token = RunnerNode.register(name=name, pools=["cpu"])
        self.node = node
        self.log = tmp / f"{name}.log"
        args = [str(RUNNER_BIN), "work", "--server", server, "--token", token, "--pool", "cpu",
                "--data-root", str(tmp / "data"), "--broker", broker]
        if not shutil.which("bwrap"):
            pytest.fail("bubblewrap is not installed: the runner's sandbox needs it (apt install bubblewrap)")
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
        self.proc = subprocess.Popen(args, stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
                                     start_new_session=True, env=env)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture
def runners(live_server, tmp_path, catalogue):
    started: list[Runner] = []

    def start(name: str, broker: str) -> Runner:
        runner = Runner(name, live_server.url, broker, tmp_path)
        started.append(runner)
        return runner

    yield start
    for runner in started:
        runner.stop()


def submit(owner, source: bytes, name: str) -> Submission:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from leaderboard.submissions.services import submission_create
    from leaderboard.submissions.validation import submission_validate

    sub = submission_create(owner=owner, benchmark=Benchmark.objects.get(slug="opt-synthetic"), name=name,
                            upload=SimpleUploadedFile(f"{name}.py", source), hparams={"lr": 0.05})
    # transaction=True tests commit at once, so on_commit already validated and dispatched; when
    # the broker was refused, validation still ran and the jobs wait as pending.
    submission_validate(submission_id=sub.pk)
    sub.refresh_from_db()
    return sub


def wait_for(predicate, timeout: float, reap: bool = False, what: str = "", runners=()) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if reap:
            jobs_reap()
        if predicate():
            return
        time.sleep(0.5)
    logs = "\n".join(f"--- {r.node.name}\n{r.tail()}" for r in runners)
    jobs = list(EvaluationJob.objects.values("task__slug", "state", "attempt", "error_kind", "error_message"))
    pytest.fail(f"timed out waiting for {what}; jobs: {jobs}\n{logs}")


@pytest.fixture
def redis_url(redis_url):
    """The shared empty Redis broker (tests/e2e/conftest.py), which the site's Celery app sends to."""
    use_broker(redis_url)
    return redis_url


def test_a_runner_killed_mid_job_loses_nothing_and_every_job_has_exactly_one_result(
        alice, redis_url, runners, lifecycle_settings):
    first = runners("node-a", redis_url)
    sub = submit(alice, SLOW_OPTIMIZER, "slow-sgd")
    job = sub.jobs.get(task__slug="opt-f1")

    def f1_underway():
        job.refresh_from_db()
        return job.state == EvaluationJob.State.RUNNING and job.runner_id == first.node.pk and job.progress > 0
    wait_for(f1_underway, 120, what="node-a to report progress on opt-f1", runners=[first])
    first.kill()

    second = runners("node-b", redis_url)
    wait_for(lambda: Submission.objects.get(pk=sub.pk).status == Submission.Status.FINISHED, 240, reap=True,
             what="the submission to finish on node-b", runners=[first, second])
    job.refresh_from_db()
    assert job.attempt == 2 and job.result_attempt == 2 and job.runner_id == second.node.pk
    assert set(sub.jobs.values_list("state", flat=True)) == {EvaluationJob.State.SUCCEEDED}
    assert BoardEntry.objects.filter(submission=sub).count() == 3
    f1 = job.result["metrics"]
    assert f1["final_loss"] < 0.49  # plain SGD from −1 on F1 descends towards the left minimum
    assert job.result["env"].get("sandbox", "").startswith("bwrap")


def test_a_job_dispatched_while_the_broker_is_down_runs_once_it_is_back(alice, runners, lifecycle_settings, tmp_path):
    redis_server = shutil.which("redis-server")
    assert redis_server, "redis-server is needed to restart a broker in this test"
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"

    def start_broker() -> subprocess.Popen:
        proc = subprocess.Popen([redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
        wait_for(lambda: _pings(port), 20, what="redis to start")
        return proc

    broker = start_broker()
    use_broker(url)
    runner = runners("node-c", url)
    try:
        broker.terminate()
        broker.wait(10)
        sub = submit(alice, FAST_OPTIMIZER, "fast-sgd")
        assert sub.status == Submission.Status.QUEUED
        assert set(sub.jobs.values_list("state", flat=True)) == {EvaluationJob.State.PENDING}
        EvaluationJob.objects.filter(submission=sub).update(created_at=sub.created_at.replace(year=2000))
        broker = start_broker()
        wait_for(lambda: Submission.objects.get(pk=sub.pk).status == Submission.Status.FINISHED, 240, reap=True,
                 what="the submission to finish after the broker came back", runners=[runner])
        assert list(sub.jobs.values_list("attempt", flat=True)) == [1, 1, 1]
        assert BoardEntry.objects.filter(submission=sub).count() == 3
    finally:
        broker.terminate()
        broker.wait(10)


def test_an_optimizer_trains_on_fake_cifar_through_the_site_and_lands_on_the_board_marked_synthetic(
        alice, redis_url, runners, tmp_path, lifecycle_settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from leaderboard.benchmarks.models import Task
    from leaderboard.submissions.services import submission_create
    from runner.datasets import DATASETS

    DATASETS["cifar-10-batches-py"].fake(tmp_path / "data", n_per_class=2)
    DATASETS["CIFAR-10-C"].fake(tmp_path / "data", n_per_class=1)
    # A budget a CPU test can afford; the catalogue's real budget is 10 epochs × 3 seeds.
    Task.objects.filter(slug="opt-cifar10-resnet18").update(
        queue="runner.cpu", params={"epochs": 1, "batch_size": 32, "seeds": 1, "target_top1": 5.0})
    node = runners("node-cifar", redis_url)
    sub = submission_create(owner=alice, benchmark=Benchmark.objects.get(slug="opt-cifar10-resnet18"),
                            name="sgd-on-cifar", upload=SimpleUploadedFile("sgd.py", FAST_OPTIMIZER),
                            hparams={"lr": 0.05})
    wait_for(lambda: Submission.objects.get(pk=sub.pk).status in (Submission.Status.FINISHED, Submission.Status.FAILED),
             300, reap=True, what="the CIFAR training job", runners=[node])
    sub.refresh_from_db()
    assert sub.status == Submission.Status.FINISHED, sub.error_message
    result = sub.jobs.get().result
    assert 0 <= result["metrics"]["test_top1_mean"] <= 100 and "cifar10c_top1" in result["metrics"]
    assert result["env"]["synthetic_data"] is True
    entry = BoardEntry.objects.get(submission=sub)
    assert entry.is_synthetic_data and "seed_0" in result["curves"]


def test_a_classifier_s_per_image_outcomes_reach_the_site_equal_to_the_dry_run(
        alice, redis_url, runners, tmp_path, lifecycle_settings):
    """Issue 17 item 1 end to end: `runner work` posts the digits result, then its per-image file;
    the site stores it with the job, and its arrays are those `runner run` writes beside R.json."""
    import hashlib

    import numpy as np
    from django.core.files.uploadedfile import SimpleUploadedFile

    from leaderboard.submissions.per_image import load_per_image
    from leaderboard.submissions.services import submission_create
    from runner.baselines.classifiers import FOLDER

    model = FOLDER / "digits_cnn.pt"
    node = runners("node-digits", redis_url)
    sub = submission_create(owner=alice, benchmark=Benchmark.objects.get(slug="digits"), name="digits-cnn",
                            upload=SimpleUploadedFile("model.pt", model.read_bytes()), hparams={})
    job = sub.jobs.get()
    wait_for(lambda: bool(EvaluationJob.objects.get(pk=job.pk).per_image), 240, reap=True,
             what="the digits job's per-image file", runners=[node])
    job.refresh_from_db()
    assert job.state == EvaluationJob.State.SUCCEEDED
    stored = load_per_image(job)
    assert stored is not None

    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
    done = subprocess.run([str(RUNNER_BIN), "run", "--task", "digits", "--artifact", str(model), "--out",
                           str(tmp_path / "R.json")], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**env, "RUNNER_WORK_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    local_file = tmp_path / "R.per_image.npz"
    with np.load(local_file, allow_pickle=False) as local:
        assert sorted(local.files) == sorted(stored)
        for key in local.files:
            np.testing.assert_array_equal(stored[key], local[key], err_msg=key)
    # The same arrays, the same bytes: the site's copy is the dry run's file to the byte.
    named = job.result["files"]["per_image"]
    with job.per_image.open("rb") as fh:
        assert named["sha256"] == hashlib.sha256(local_file.read_bytes()).hexdigest() == \
            hashlib.sha256(fh.read()).hexdigest()
    assert named["n"] == len(stored["index"]) == 450
