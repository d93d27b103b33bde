"""Runners report their pools, device and datasets; a runner is never handed a job it has no data
for, and a job nobody can serve ends with a reason that names the cause."""
from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.utils import timezone

from leaderboard.jobs.reaper import jobs_reap
from leaderboard.runners.models import RunnerNode
from leaderboard.submissions.models import EvaluationJob, Submission
from runner.catalogue import CATALOGUE
from runner.spec import ErrorKind
from tests.conftest import RunnerAPI, queued_messages

pytestmark = pytest.mark.django_db
EVERY_DATASET = sorted({t.dataset for b in CATALOGUE for t in b.tasks if t.dataset})


def torchscript_model() -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(4, 10)), buffer)
    return buffer.getvalue()


@pytest.fixture
def submit_classifier(make_submission):
    model = torchscript_model()

    def submit(owner, benchmark: str = "imagenet", name: str = "resnet"):
        return make_submission(owner, benchmark=benchmark, source=model, filename="model.pt", hparams={"channels_last": False},
                               name=name)

    return submit


def gpu_node(client, name: str, datasets: list, *, device: str = "cuda:0 NVIDIA H200") -> RunnerAPI:
    """A registered runner of pool gpu that has sent one node heartbeat."""
    node, token = RunnerNode.register(name=name, pools=["gpu"])
    node.raw_token = token
    api = RunnerAPI(client, node)
    response = api.post("nodes/heartbeat/", {"version": "1.0", "pools": ["gpu"], "device": device,
                                             "datasets": datasets})
    assert response.status_code == 200, response.content
    return api


def held(*names: str, synthetic: bool = False) -> list[dict]:
    return [{"name": n, "synthetic": synthetic, "checksum": None} for n in names]


# ----------------------------------------------------------------------------------------------
# Node reports
# ----------------------------------------------------------------------------------------------
def test_a_node_heartbeat_stores_pools_device_and_each_dataset_with_its_origin_and_checksum(runner_api, runner_node):
    response = runner_api.post("nodes/heartbeat/", {
        "version": "1.2", "pools": ["cpu", "gpu"], "device": "cuda:0 NVIDIA H200",
        "datasets": [{"name": "imagenet-c", "synthetic": True, "checksum": None},
                     {"name": "cifar-10-batches-py", "synthetic": False, "checksum": "md5:c58f30108f718f92721af3b95e74349a"},
                     "sklearn-digits"]})
    assert response.status_code == 200
    runner_node.refresh_from_db()
    assert runner_node.pools == ["cpu", "gpu"] and runner_node.device == "cuda:0 NVIDIA H200"
    assert runner_node.holding("imagenet-c") == {"name": "imagenet-c", "synthetic": True, "checksum": None}
    assert runner_node.holding("cifar-10-batches-py")["checksum"] == "md5:c58f30108f718f92721af3b95e74349a"
    assert runner_node.holding("sklearn-digits") == {"name": "sklearn-digits", "synthetic": None, "checksum": None}
    assert runner_node.is_online


@pytest.mark.parametrize("body, blamed", [
    ({"pools": "gpu"}, "pools"),
    ({"pools": ["GPU; DROP TABLE"]}, "not a pool name"),
    ({"pools": [f"p{i}" for i in range(21)]}, "at most 20"),
    ({"device": "x" * 121}, "device"),
    ({"device": "cuda\x00"}, "device"),
    ({"datasets": [{"name": "a"}] * 201}, "at most 200"),
    ({"datasets": [{"name": "<script>"}]}, "catalogue dataset id"),
    ({"datasets": [{"name": "imagenet-c", "synthetic": "no"}]}, "synthetic"),
    ({"datasets": [{"name": "imagenet-c", "checksum": "x" * 201}]}, "checksum"),
    ({"datasets": [{"name": "imagenet-c", "checksum": "é"}]}, "checksum"),
    ({"datasets": [["imagenet-c"]]}, "catalogue dataset id"),
])
def test_a_node_report_that_breaks_the_contract_is_refused_and_nothing_of_it_is_stored(
        runner_api, runner_node, body, blamed):
    RunnerNode.objects.filter(pk=runner_node.pk).update(datasets=held("sklearn-digits"), device="cpu")
    response = runner_api.post("nodes/heartbeat/", {"version": "1", **body})
    assert response.status_code == 400 and blamed in response.json()["detail"]
    runner_node.refresh_from_db()
    assert runner_node.datasets == held("sklearn-digits") and runner_node.device == "cpu"
    assert runner_node.last_heartbeat is None  # a node speaking a broken protocol is not taken as online


def test_the_runners_page_shows_each_node_device_and_which_data_is_synthetic(client, runner_api):
    runner_api.post("nodes/heartbeat/", {"pools": ["cpu"], "device": "cuda:0 NVIDIA H200",
                                         "datasets": held("imagenet-c", synthetic=True) + held("geode")})
    html = client.get("/runners/").content.decode()
    assert "cuda:0 NVIDIA H200" in html
    assert "imagenet-c <span class=\"tag\">synthetic data</span>" in html and "geode</span>" in html


# ----------------------------------------------------------------------------------------------
# A runner without the data never keeps the job
# ----------------------------------------------------------------------------------------------
def test_a_claim_from_a_runner_without_the_data_is_refused_and_the_job_waits_for_one_that_has_it(
        client, alice, submit_classifier, _celery_for_tests):
    lacking = gpu_node(client, "no-imagenet-c", [d for d in EVERY_DATASET if d != "imagenet-c"])
    sub = submit_classifier(alice)
    job = sub.jobs.get(task__slug="imagenet-c")
    response = lacking.claim(job.pk, datasets=[d for d in EVERY_DATASET if d != "imagenet-c"])
    assert response.status_code == 409
    assert response.json()["reason"] == "dataset_missing" and "imagenet-c" in response.json()["detail"]
    job.refresh_from_db()
    assert (job.state, job.attempt, job.runner) == (EvaluationJob.State.PENDING, 0, None)  # no attempt used
    assert "does not hold dataset imagenet-c" in job.progress_message
    # While only runners without the data are online, the reaper does not send it again: the
    # same runner is not handed the same job over and over.
    EvaluationJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(minutes=1))
    before = queued_messages(_celery_for_tests)
    for _ in range(3):
        jobs_reap()
    job.refresh_from_db()
    assert job.state == EvaluationJob.State.PENDING and queued_messages(_celery_for_tests) == before
    # A runner that holds it comes online: the next reaper pass sends it, and that runner takes it.
    holder = gpu_node(client, "full-node", held(*EVERY_DATASET))
    assert jobs_reap()["dispatched"] == 1
    assert queued_messages(_celery_for_tests) == before + 1
    spec = holder.claim(job.pk).json()["spec"]
    assert spec["attempt"] == 1 and spec["task"]["dataset"] == "imagenet-c"  # the refusal used no attempt
    job.refresh_from_db()
    assert job.runner.name == "full-node" and job.error_kind == ""  # and left nothing on the user's record


def test_a_refused_job_is_held_back_while_its_only_holder_is_busy_and_an_idle_runner_lacks_the_data(
        client, alice, bob, submit_classifier, _celery_for_tests):
    lacking = gpu_node(client, "no-imagenet-c", held(*[d for d in EVERY_DATASET if d != "imagenet-c"]))
    holder = gpu_node(client, "full-node", held(*EVERY_DATASET))
    busy = submit_classifier(bob, name="long one")
    assert holder.claim(busy.jobs.get(task__slug="imagenet-val").pk).status_code == 200
    job = submit_classifier(alice).jobs.get(task__slug="imagenet-c")
    assert lacking.claim(job.pk, datasets=[d for d in EVERY_DATASET if d != "imagenet-c"]).status_code == 409
    EvaluationJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(minutes=1))
    jobs_reap()
    job.refresh_from_db()
    assert job.state == EvaluationJob.State.PENDING  # sent now, the idle runner without the data would get it


def test_a_runner_that_says_nothing_of_its_data_may_still_claim_jobs_without_a_dataset(runner_api, alice, make_submission):
    job = make_submission(alice).jobs.first()
    assert runner_api.claim(job.pk, datasets=[]).status_code == 200  # opt-f1 reads no dataset


# ----------------------------------------------------------------------------------------------
# The reaper's last word names the cause
# ----------------------------------------------------------------------------------------------
def _long_ago(sub, settings):
    waited = timedelta(seconds=settings.JOB_DISPATCH_TIMEOUT_SECONDS * settings.JOB_MAX_DISPATCHES + 60)
    EvaluationJob.objects.filter(submission=sub).update(created_at=timezone.now() - waited,
                                                        dispatched_at=timezone.now() - waited)


def test_the_reaper_fails_a_job_whose_pool_had_no_runner_online_naming_the_pool_and_when_it_was_last_seen(
        client, alice, submit_classifier, settings):
    gone = gpu_node(client, "old-gpu-box", held(*EVERY_DATASET))
    RunnerNode.objects.filter(pk=gone.node.pk).update(last_heartbeat=timezone.now() - timedelta(hours=3))
    sub = submit_classifier(alice)
    _long_ago(sub, settings)
    assert jobs_reap()["failed"] == 6
    job = sub.jobs.get(task__slug="imagenet-val")
    assert job.error_kind == ErrorKind.NEVER_CLAIMED
    assert job.error_message.startswith("No runner of pool gpu was online for the 76 minutes this job waited "
                                        "(last seen 3\xa0hours ago: old-gpu-box).")
    sub.refresh_from_db()
    assert sub.status == Submission.Status.FAILED and not sub.counts_against_quota


def test_the_reaper_fails_a_job_no_online_runner_holds_the_data_for_naming_the_data(
        client, alice, submit_classifier, settings):
    gpu_node(client, "no-imagenet-c", held(*[d for d in EVERY_DATASET if d != "imagenet-c"]))
    sub = submit_classifier(alice)
    job = sub.jobs.get(task__slug="imagenet-c")
    EvaluationJob.objects.filter(pk=job.pk).update(state=EvaluationJob.State.PENDING)  # refused earlier
    _long_ago(sub, settings)
    jobs_reap()
    job.refresh_from_db()
    assert job.state == EvaluationJob.State.FAILED and job.error_kind == ErrorKind.NEVER_CLAIMED
    assert job.error_message.startswith("No online runner of pool gpu held the ImageNet-C data (dataset imagenet-c)")
    assert sub.jobs.get(task__slug="imagenet-val").state == EvaluationJob.State.DISPATCHED  # served: it waits on
