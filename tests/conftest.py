"""Shared fixtures: named personas, a registered runner, and factories for submissions. Every test
gets its own media folder and filesystem broker folder, so dispatches are real but private."""
from __future__ import annotations

import pytest

from runner.spec import celery_broker_settings

OPTIMIZER_SOURCE = b'''
import torch


def make_optimizer(params, lr=0.1, momentum=0.0):
    return torch.optim.SGD(params, lr=lr, momentum=momentum)
'''


@pytest.fixture(scope="session", autouse=True)
def _celery_for_tests(tmp_path_factory):
    """Site tasks run inline; runner dispatches go to a private filesystem broker (real, no server)."""
    from leaderboard.celery import app

    folder = tmp_path_factory.mktemp("broker")
    broker = celery_broker_settings(f"filesystem://{folder}")
    app.conf.update(task_always_eager=True, task_eager_propagates=True, broker_url=broker["broker_url"],
                    broker_transport_options=broker["broker_transport_options"])
    app.broker_folder = folder
    yield app


@pytest.fixture(autouse=True)
def _private_media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")


@pytest.fixture(autouse=True)
def _empty_page_cache():
    """Every test starts with an empty page cache: its keys hold board versions, which restart
    with each test's database."""
    from django.core.cache import caches

    for cache in caches.all(initialized_only=True):
        cache.clear()


def queued_messages(app) -> int:
    """Messages waiting in the test broker, across queues."""
    return len(list((app.broker_folder / "queue").glob("*.msg")))


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", "alice@example.org", "alice-password-1")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", "bob@example.org", "bob-password-1")


@pytest.fixture
def runner_node(db):
    from leaderboard.runners.models import RunnerNode

    node, token = RunnerNode.register(name="gpu-node-1", pools=["cpu"])
    node.raw_token = token
    return node


@pytest.fixture
def second_runner(db):
    from leaderboard.runners.models import RunnerNode

    node, token = RunnerNode.register(name="gpu-node-2", pools=["cpu"])
    node.raw_token = token
    return node


@pytest.fixture
def catalogue(db):
    """The task catalogue. A data migration loads it; transactional tests flush it, so reload."""
    from leaderboard.benchmarks.models import Benchmark
    from leaderboard.benchmarks.services import catalogue_load

    if not Benchmark.objects.exists():
        catalogue_load()


@pytest.fixture
def synthetic_benchmark(catalogue):
    from leaderboard.benchmarks.models import Benchmark

    return Benchmark.objects.get(slug="opt-synthetic")


@pytest.fixture
def make_submission(catalogue, django_capture_on_commit_callbacks):
    """Create and validate a submission the way the form does; returns it queued with its jobs."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from leaderboard.benchmarks.models import Benchmark
    from leaderboard.submissions.services import submission_create

    def make(owner, *, benchmark="opt-synthetic", source=OPTIMIZER_SOURCE, filename="sgd.py",
             hparams=None, name="my SGD", **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            sub = submission_create(
                owner=owner, benchmark=Benchmark.objects.get(slug=benchmark), name=name,
                upload=SimpleUploadedFile(filename, source), hparams=hparams or {"lr": 0.1}, **kwargs,
            )
        sub.refresh_from_db()
        return sub

    return make


class RunnerAPI:
    """A runner node speaking the runner HTTP API through Django's test client."""

    def __init__(self, client, node):
        self.client, self.node = client, node
        self.auth = {"HTTP_AUTHORIZATION": f"Bearer {node.raw_token}"}

    def post(self, path: str, body: dict):
        import json

        return self.client.post(f"/api/runner/v1/{path}", data=json.dumps(body),
                                content_type="application/json", **self.auth)

    def claim(self, job_id: int, datasets: list | None = None):
        """Claim as a runner holding ``datasets`` (default: every dataset of the catalogue)."""
        from runner.catalogue import CATALOGUE

        held = sorted({t.dataset for b in CATALOGUE for t in b.tasks if t.dataset}) if datasets is None else datasets
        return self.post(f"jobs/{job_id}/claim/", {"version": "test", "pools": ["cpu"], "datasets": held})

    def heartbeat(self, job_id: int, attempt: int, progress: float = 0.5):
        return self.post(f"jobs/{job_id}/heartbeat/", {"attempt": attempt, "progress": progress, "message": "step"})

    def result(self, job_id: int, attempt: int, result: dict):
        return self.post(f"jobs/{job_id}/result/", {"attempt": attempt, "result": result, "log_tail": "ok"})

    def fail(self, job_id: int, attempt: int, kind: str, message: str = "it broke"):
        return self.post(f"jobs/{job_id}/fail/", {"attempt": attempt, "kind": kind, "message": message})

    def artifact(self, job_id: int, attempt: int):
        return self.client.get(f"/api/runner/v1/jobs/{job_id}/artifact/?attempt={attempt}", **self.auth)


@pytest.fixture
def runner_api(client, runner_node):
    return RunnerAPI(client, runner_node)


@pytest.fixture
def second_runner_api(client, second_runner):
    return RunnerAPI(client, second_runner)


def synthetic_result(task: str, final_loss: float = 0.01, final_x: float = -0.29) -> dict:
    from runner.spec import make_result

    return make_result(
        task, {"final_x": final_x, "final_loss": final_loss, "min_loss": final_loss},
        curves={"trajectory": {"step": [0, 1], "x": [-1.0, final_x], "loss": [0.49, final_loss]}},
        env={"runner": "test"}, timing={"wall_s": 0.5},
    )


@pytest.fixture
def finish_job(django_capture_on_commit_callbacks):
    """Claim a job and post a valid synthetic result for it through the runner API."""

    def finish(api: RunnerAPI, job, final_loss: float = 0.01):
        spec = api.claim(job.pk).json()["spec"]
        with django_capture_on_commit_callbacks(execute=True):
            response = api.result(job.pk, spec["attempt"], synthetic_result(job.task.slug, final_loss))
        assert response.status_code == 200, response.content
        return spec

    return finish
