"""Issue 19's "done when" for architecture + weights, through the site: a torchvision ResNet-18
uploaded as .safetensors (with the hyperparameters naming its architecture and preprocessing) and
the same network's .pt2 export are validated by the site, dispatched on the broker (Redis) and
evaluated by a real `runner work` process in the sandbox on fake CIFAR-10 and CIFAR-10-C; every
metric of every task is the same. Weights that do not fit the architecture they name pass the
upload (the site has no torch to build it with) and fail at the first load with one line that
names the tensor and both shapes."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from leaderboard.benchmarks.models import Benchmark
from leaderboard.runners.models import RunnerNode
from leaderboard.submissions.models import EvaluationJob, Submission
from leaderboard.submissions.services import submission_create
from runner import datasets
from runner.spec import celery_broker_settings
from tests.runner.resnet_files import HPARAMS, save_both

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

RUNNER_BIN = Path(sys.executable).parent / "runner"


@pytest.fixture
def broker(redis_url):
    """The shared empty Redis (tests/e2e/conftest.py), which the site's Celery app sends to."""
    from leaderboard.celery import app

    conf = celery_broker_settings(redis_url)
    app.conf.broker_url, app.conf.broker_transport_options = conf["broker_url"], conf["broker_transport_options"]
    return redis_url


@pytest.fixture
def runner_work(live_server, broker, catalogue, tmp_path):
    """One `runner work` process for the live site, in the CIFAR tasks' pool, holding fake CIFAR-10
    and CIFAR-10-C."""
    if not shutil.which("bwrap"):
        pytest.fail("bubblewrap is not installed: the runner's sandbox needs it (apt install bubblewrap)")
    data = tmp_path / "data"
    datasets.get("cifar-10-batches-py").fake(data)
    datasets.get("CIFAR-10-C").fake(data, n_per_class=1)  # 10 images × 19 corruptions × 5 severities
    # The CIFAR tasks' queue is runner.gpu; a CPU serves it here (--device cpu), as a small node may.
    _, token = RunnerNode.register(name="node-st", pools=["gpu"])
    log = tmp_path / "runner-work.log"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
    proc = subprocess.Popen(
        [str(RUNNER_BIN), "work", "--server", live_server.url, "--token", token, "--pool", "gpu",
         "--data-root", str(data), "--broker", broker, "--device", "cpu"],
        stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path,
        env={**env, "RUNNER_WORK_DIR": str(tmp_path)})
    yield proc, log
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def submit(owner, path: Path, hparams: dict, name: str) -> Submission:
    return submission_create(owner=owner, benchmark=Benchmark.objects.get(slug="cifar10"), name=name,
                             upload=SimpleUploadedFile(path.name, path.read_bytes()), hparams=hparams)


def wait_until_ended(subs: list[Submission], proc, log: Path, timeout: float = 420) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"runner work exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        statuses = set(Submission.objects.filter(pk__in=[s.pk for s in subs]).values_list("status", flat=True))
        if statuses <= {Submission.Status.FINISHED, Submission.Status.FAILED, Submission.Status.REJECTED}:
            return
        time.sleep(1)
    jobs = list(EvaluationJob.objects.values("submission_id", "task__slug", "state", "error_message"))
    pytest.fail(f"timed out; jobs: {jobs}\n{log.read_text()[-3000:]}")


def test_a_resnet18_as_safetensors_scores_what_its_pt2_export_scores_through_the_site(
        alice, runner_work, tmp_path):
    proc, log = runner_work
    weights, exported = save_both(tmp_path)
    as_weights = submit(alice, weights, HPARAMS, "resnet18 weights")
    as_export = submit(alice, exported, {}, "resnet18 export")
    misfit = submit(alice, weights, {**HPARAMS, "num_classes": 100}, "resnet18 wrong head")
    assert as_weights.artifact_format == "safetensors" and as_export.artifact_format == "pt2"

    wait_until_ended([as_weights, as_export, misfit], proc, log)
    for sub in (as_weights, as_export):
        sub.refresh_from_db()
        assert sub.status == Submission.Status.FINISHED, (sub.error_message, log.read_text()[-3000:])
    results = {(job.submission_id, job.task.slug): job.result
               for job in EvaluationJob.objects.filter(submission__in=[as_weights, as_export]).select_related("task")}
    for task in ("cifar10", "cifar10-c"):
        from_weights, from_export = results[as_weights.pk, task], results[as_export.pk, task]
        assert from_weights["env"]["format"] == "safetensors" and from_export["env"]["format"] == "pt2"
        assert from_weights["env"]["sandbox"].startswith("bwrap")
        assert from_weights["metrics"] == from_export["metrics"], task
        assert from_weights["ci95"] == from_export["ci95"] and from_weights["breakdown"] == from_export["breakdown"]

    misfit.refresh_from_db()
    assert misfit.status == Submission.Status.FAILED
    failed = misfit.jobs.exclude(error_kind="").first()
    assert failed is not None and failed.error_kind == "invalid_artifact"
    assert "wrong shape: fc.bias is [10] in the file, [100] in torchvision:resnet18 (num_classes 100)" in (
        failed.error_message)
    assert "\n" not in failed.error_message
