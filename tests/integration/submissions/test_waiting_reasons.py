"""A waiting job's page says why it waits, and the submit form and the API warn before an upload
when no online runner can serve a benchmark (the upload still works: runners may come later)."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from leaderboard.accounts.models import ApiToken
from leaderboard.runners.models import RunnerNode
from tests.conftest import OPTIMIZER_SOURCE
from tests.integration.runners.test_runner_reports import EVERY_DATASET, gpu_node, held, torchscript_model

pytestmark = pytest.mark.django_db


@pytest.fixture
def submit_classifier(make_submission):
    model = torchscript_model()

    def submit(owner, benchmark: str = "imagenet", name: str = "resnet"):
        return make_submission(owner, benchmark=benchmark, source=model, filename="model.pt",
                               hparams={"channels_last": False}, name=name)

    return submit


def reasons(client, sub) -> dict[str, str | None]:
    doc = client.get(f"/s/{sub.pk}/status.json").json()
    return {job["task"]: job["waiting_reason"] for job in doc["jobs"]}


def test_a_job_for_a_pool_with_no_runner_says_so_on_its_page(client, alice, submit_classifier):
    sub = submit_classifier(alice)
    html = client.get(f"/s/{sub.pk}/").content.decode()
    assert html.count("waiting: no runner of pool gpu online (none has ever reported)") == 6
    assert set(reasons(client, sub).values()) == {"no runner of pool gpu online (none has ever reported)"}


def test_a_pool_whose_runners_went_quiet_says_when_one_was_last_seen(client, alice, submit_classifier):
    node = gpu_node(client, "gpu-box-7", held(*EVERY_DATASET)).node
    sub = submit_classifier(alice)
    assert reasons(client, sub)["imagenet-val"] == "next in line: an idle runner of pool gpu should take it shortly"
    # Its heartbeats stop; past the offline threshold (the reaper runs more often than that) the page says so.
    RunnerNode.objects.filter(pk=node.pk).update(last_heartbeat=timezone.now() - timedelta(minutes=5))
    assert reasons(client, sub)["imagenet-val"] == "no runner of pool gpu online (last seen 5\xa0minutes ago: gpu-box-7)"


def test_a_job_no_online_runner_has_the_data_for_says_which_data(client, alice, submit_classifier):
    gpu_node(client, "no-imagenet-c", held(*[d for d in EVERY_DATASET if d != "imagenet-c"]))
    sub = submit_classifier(alice)
    waiting = reasons(client, sub)
    assert waiting["imagenet-c"] == "no online runner holds the ImageNet-C data (dataset imagenet-c)"
    assert waiting["imagenet-val"].startswith("next in line")


def test_a_job_behind_others_says_how_many_jobs_are_ahead(client, alice, bob, make_submission, runner_api, runner_node):
    runner_api.post("nodes/heartbeat/", {"pools": ["cpu"], "datasets": []})
    make_submission(bob, name="first")
    sub = make_submission(alice)
    html = client.get(f"/s/{sub.pk}/").content.decode()
    assert "waiting: 3 jobs ahead in the cpu queue" in html
    assert reasons(client, sub) == {"opt-f1": "3 jobs ahead in the cpu queue", "opt-f2": "4 jobs ahead in the cpu queue",
                                    "opt-f3": "5 jobs ahead in the cpu queue"}
    running = sub.jobs.get(task__slug="opt-f1")
    runner_api.claim(running.pk)
    assert reasons(client, sub)["opt-f1"] is None  # running: it no longer waits


def test_the_page_runs_as_many_queries_with_many_waiting_jobs_and_runners_as_with_few(
        client, alice, bob, make_submission, submit_classifier, settings):
    settings.SUBMISSIONS_CONCURRENT = 10
    settings.PAGE_CACHE_SECONDS = 0  # count the render's queries, not a cached page's
    few = make_submission(alice, name="few")
    node, _ = RunnerNode.register(name="cpu-first", pools=["cpu"])
    RunnerNode.objects.filter(pk=node.pk).update(last_heartbeat=timezone.now())

    def count(sub) -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get(f"/s/{sub.pk}/").status_code == 200
        return len(queries)

    baseline = count(few)  # one waiting job's reason: its runners, the busy ones, the jobs ahead
    for i in range(4):
        gpu_node(client, f"gpu-{i}", held(*EVERY_DATASET))
        node, _ = RunnerNode.register(name=f"cpu-{i}", pools=["cpu"])
        RunnerNode.objects.filter(pk=node.pk).update(last_heartbeat=timezone.now(), datasets=held("sklearn-digits"))
        make_submission(bob, name=f"ahead {i}")
    many = submit_classifier(alice)
    assert count(few) == baseline and count(many) == baseline


# ----------------------------------------------------------------------------------------------
# Warnings before the upload
# ----------------------------------------------------------------------------------------------
def test_the_submit_form_warns_of_a_benchmark_no_online_runner_can_serve(client, alice, catalogue):
    client.force_login(alice)
    html = client.get("/submit/").content.decode()
    assert 'data-benchmark="imagenet"' in html
    assert ("No runner of pool gpu online (none has ever reported): ImageNet validation, ImageNet-A, ImageNet-R, "
            "ImageNet-C, GeoDE, Dollar Street will wait until one comes online.") in html
    gpu_node(client, "holds-all-but-c", held(*[d for d in EVERY_DATASET if d != "imagenet-c"]))
    html = client.get("/submit/").content.decode()
    assert "No online runner holds the data of ImageNet-C (dataset imagenet-c): it will wait until one does." in html
    assert "No runner of pool gpu online" not in html


def test_the_form_says_when_the_only_data_held_is_synthetic(client, alice, catalogue):
    client.force_login(alice)
    gpu_node(client, "demo-node", held(*EVERY_DATASET, synthetic=True))
    html = client.get("/submit/").content.decode()
    assert "hold only synthetic copies of the data of CIFAR-10 test, CIFAR-10-C" in html


def test_uploading_to_a_benchmark_nobody_serves_still_works_and_says_it_will_wait(
        client, alice, catalogue, django_capture_on_commit_callbacks):
    client.force_login(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/submit/", {"benchmark": "cifar10", "name": "tiny", "hparams": "{}",
                                            "artifact": _upload("model.pt", torchscript_model()),
                                            "visibility": "public"}, follow=True)
    assert response.status_code == 200 and "received" in response.content.decode()
    assert "No runner of pool gpu online" in response.content.decode()  # the flash message after the upload
    page = client.get(response.redirect_chain[-1][0]).content.decode()  # validated now: its jobs wait
    assert page.count("waiting: no runner of pool gpu online (none has ever reported)") == 2


def _upload(name: str, content: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, content)


@pytest.fixture
def alice_token(alice):
    return ApiToken.issue(user=alice, name="laptop")[1]


def test_the_api_warns_on_the_benchmark_before_upload_and_in_the_create_response(
        client, alice, alice_token, catalogue, runner_api, django_capture_on_commit_callbacks):
    auth = {"HTTP_AUTHORIZATION": f"Token {alice_token}"}
    bench = client.get("/api/v1/benchmarks/imagenet/").json()
    assert bench["warnings"] == ["No runner of pool gpu online (none has ever reported): ImageNet validation, "
                                 "ImageNet-A, ImageNet-R, ImageNet-C, GeoDE, Dollar Street will wait until one "
                                 "comes online."]
    runner_api.post("nodes/heartbeat/", {"pools": ["cpu"], "datasets": []})
    listed = {b["slug"]: b["warnings"] for b in client.get("/api/v1/benchmarks/").json()}
    assert listed["opt-synthetic"] == [] and listed["imagenet"] == bench["warnings"]
    assert listed["opt-digits"] == ["No online runner holds the data of Small CNN on digits (dataset sklearn-digits): "
                                    "it will wait until one does."]
    with django_capture_on_commit_callbacks(execute=True):
        created = client.post("/api/v1/submissions/", {"benchmark": "cifar10", "name": "tiny",
                                                       "artifact": _upload("model.pt", torchscript_model())}, **auth)
    assert created.status_code == 201
    assert created.json()["warnings"] == ["No runner of pool gpu online (none has ever reported): CIFAR-10 test, "
                                          "CIFAR-10-C will wait until one comes online."]
    detail = client.get(f"/api/v1/submissions/{created.json()['id']}/", **auth).json()
    assert {j["waiting_code"] for j in detail["jobs"]} == {"no_runner_online"}
    listed = client.get("/api/v1/submissions/", **auth).json()
    assert listed[0]["jobs"][0]["waiting_reason"] == "no runner of pool gpu online (none has ever reported)"
    with django_capture_on_commit_callbacks(execute=True):
        served = client.post("/api/v1/submissions/", {"benchmark": "opt-synthetic", "name": "sgd", "hparams": json.dumps({"lr": 0.1}),
                                                      "artifact": _upload("sgd.py", OPTIMIZER_SOURCE)}, **auth)
    assert served.status_code == 201 and served.json()["warnings"] == []
