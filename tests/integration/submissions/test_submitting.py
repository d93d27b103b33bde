"""Submitting through the web form and the REST API, with the errors a person can act on."""
from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

import runner
from leaderboard.accounts.models import ApiToken
from leaderboard.submissions.models import EvaluationJob, Submission
from tests.conftest import OPTIMIZER_SOURCE, queued_messages

pytestmark = pytest.mark.django_db


def form_post(client, *, benchmark="opt-synthetic", filename="sgd.py", content=OPTIMIZER_SOURCE,
              hparams='{"lr": 0.1}', name="my SGD"):
    return client.post("/submit/", {
        "benchmark": benchmark, "name": name, "hparams": hparams, "visibility": "public",
        "artifact": SimpleUploadedFile(filename, content),
    })


def test_the_form_requires_logging_in(client):
    response = client.get("/submit/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_a_researcher_submits_an_optimizer_through_the_form_and_it_is_queued_with_one_job_per_task(
        client, alice, django_capture_on_commit_callbacks, _celery_for_tests):
    client.force_login(alice)
    before = queued_messages(_celery_for_tests)
    with django_capture_on_commit_callbacks(execute=True):
        response = form_post(client)
    sub = Submission.objects.get(owner=alice)
    assert response.status_code == 302 and response["Location"] == f"/s/{sub.pk}/"
    assert sub.status == Submission.Status.QUEUED
    assert sub.artifact_format == "python" and sub.hparams == {"lr": 0.1}
    assert sorted(sub.jobs.values_list("task__slug", flat=True)) == ["opt-f1", "opt-f2", "opt-f3"]
    assert set(sub.jobs.values_list("state", flat=True)) == {EvaluationJob.State.DISPATCHED}
    assert queued_messages(_celery_for_tests) == before + 3
    page = client.get(response["Location"])
    assert b"queued" in page.content and b"opt-f2" in page.content


def test_the_form_shows_how_many_submissions_are_left(client, alice, make_submission, settings):
    settings.SUBMISSIONS_PER_DAY = 5
    make_submission(alice)
    client.force_login(alice)
    page = client.get("/submit/").content.decode()
    assert "<strong>4</strong> more today (of 5)" in page


_IDENTITY_DENOISER = (Path(runner.__file__).parent / "baselines" / "denoisers" / "identity.pt").read_bytes()


def _pickle_bytes() -> bytes:
    return pickle.dumps({"weights": [1, 2, 3]})


def _torch_save_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("model/data.pkl", _pickle_bytes())
        archive.writestr("model/version", "3")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "benchmark, filename, content, hparams, field, fragment",
    [
        ("opt-synthetic", "empty.py", b"", "{}", "artifact", "The submitted file is empty"),
        ("opt-synthetic", "sgd.txt", OPTIMIZER_SOURCE, "{}", "artifact", "has the extension .txt"),
        ("opt-synthetic", "sgd.py", OPTIMIZER_SOURCE, "{lr: 0.1}", "hparams", "not valid JSON"),
        ("opt-synthetic", "sgd.py", OPTIMIZER_SOURCE, "[0.1]", "hparams", "JSON object"),
        ("opt-synthetic", "broken.py", b"def make_optimizer(params:\n", "{}", "artifact", "does not parse"),
        ("opt-synthetic", "none.py", b"import torch\n", "{}", "artifact", "make_optimizer(params, **hparams)"),
        ("opt-synthetic", "sgd.py", OPTIMIZER_SOURCE, '{"learning_rate": 1}', "hparams", "learning_rate"),
        ("digits", "model.pkl", _pickle_bytes(), "{}", "artifact", "has the extension .pkl"),
        ("digits", "model.pt", _pickle_bytes(), "{}", "artifact", "Python pickle"),
        ("digits", "model.pt", _torch_save_zip(), "{}", "artifact", "torch.save checkpoint"),
        ("digits", "model.onnx", b"hello, I am not a model", "{}", "artifact", "unrecognised file"),
        ("denoise-skimage-gray", "bm3d.json", b'{"builtin_baseline": "bm3d"}', "{}", "artifact",
         "has the extension .json"),
        ("denoise-skimage-gray", "bm3d.pt", b'{"builtin_baseline": "bm3d"}', "{}", "artifact",
         "reserved for the platform's builtin baselines"),
        ("denoise-skimage-gray", "identity.pt", _IDENTITY_DENOISER, '{"lr": 0.1}', "hparams",
         "A denoiser takes no hyperparameter lr; accepted: precision, channels_last"),
    ],
)
def test_a_bad_upload_gets_an_error_on_its_field_and_nothing_is_stored(
        client, alice, benchmark, filename, content, hparams, field, fragment):
    client.force_login(alice)
    response = form_post(client, benchmark=benchmark, filename=filename, content=content, hparams=hparams)
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert field in errors, errors
    assert fragment in " ".join(errors[field]), errors
    assert not Submission.objects.exists()


def test_an_oversized_upload_is_refused_with_the_limit(client, alice, settings):
    settings.MAX_SOURCE_BYTES = 100
    client.force_login(alice)
    response = form_post(client, content=OPTIMIZER_SOURCE + b"#" * 200)
    assert "the limit for this benchmark is 100 bytes" in " ".join(response.context["form"].errors["artifact"])
    assert not Submission.objects.exists()


def test_the_pickle_error_says_how_to_export_instead(client, alice):
    client.force_login(alice)
    response = form_post(client, benchmark="digits", filename="model.pt", content=_pickle_bytes())
    message = " ".join(response.context["form"].errors["artifact"])
    assert "torch.jit.save" in message and "torch.onnx.export" in message


def test_the_daily_quota_stops_the_next_submission_but_infrastructure_failures_do_not_count(
        client, alice, make_submission, settings):
    settings.SUBMISSIONS_PER_DAY = 2
    settings.SUBMISSIONS_CONCURRENT = 10
    first = make_submission(alice)
    make_submission(alice)
    client.force_login(alice)
    response = form_post(client)
    assert "used your 2 submissions" in " ".join(response.context["form"].non_field_errors())
    Submission.objects.filter(pk=first.pk).update(status=Submission.Status.FAILED, counts_against_quota=False)
    response = form_post(client)
    assert response.status_code == 302


def test_the_concurrent_quota_counts_submissions_still_being_evaluated(client, alice, make_submission, settings):
    settings.SUBMISSIONS_CONCURRENT = 1
    first = make_submission(alice)
    client.force_login(alice)
    assert "already have 1 submissions being evaluated" in " ".join(form_post(client).context["form"].non_field_errors())
    Submission.objects.filter(pk=first.pk).update(status=Submission.Status.FINISHED)
    assert form_post(client).status_code == 302


# ----------------------------------------------------------------------------- REST API


@pytest.fixture
def alice_token(alice):
    return ApiToken.issue(user=alice, name="laptop")[1]


def api_post(client, token, **fields):
    data = {"benchmark": "opt-synthetic", "name": "api SGD", "hparams": json.dumps({"lr": 0.1}),
            "artifact": SimpleUploadedFile("sgd.py", OPTIMIZER_SOURCE)}
    data.update(fields)
    headers = {"HTTP_AUTHORIZATION": f"Token {token}"} if token else {}
    return client.post("/api/v1/submissions/", data, **headers)


def test_the_api_accepts_a_multipart_submission_with_a_token(client, alice, alice_token, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = api_post(client, alice_token)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "uploaded" and body["benchmark"] == "opt-synthetic"
    detail = client.get(f"/api/v1/submissions/{body['id']}/").json()
    assert detail["status"] == "queued"
    assert [j["task"] for j in detail["jobs"]] == ["opt-f1", "opt-f2", "opt-f3"]
    assert ApiToken.objects.get(user=alice).last_used_at is not None


def test_the_api_refuses_a_missing_or_revoked_token(client, alice):
    assert api_post(client, None).status_code in (401, 403)
    response = api_post(client, "lb_not-a-token")
    assert response.status_code == 401 and "Invalid or revoked token" in response.json()["detail"]


def test_the_api_reports_bad_uploads_per_field(client, alice, alice_token):
    response = api_post(client, alice_token, hparams="{not json", artifact=SimpleUploadedFile("x.py", b"def f(:"))
    assert response.status_code == 400
    assert "hparams" in response.json()
    response = api_post(client, alice_token, artifact=SimpleUploadedFile("x.py", b"def f(:"))
    assert response.status_code == 400 and "does not parse" in response.json()["artifact"][0]
    response = api_post(client, alice_token, benchmark="no-such-benchmark")
    assert response.status_code == 400 and "benchmark" in response.json()


def test_the_api_answers_429_when_the_quota_is_used(client, alice, alice_token, settings, make_submission):
    settings.SUBMISSIONS_PER_DAY = 1
    make_submission(alice)
    response = api_post(client, alice_token)
    assert response.status_code == 429 and "used your 1 submissions" in response.json()["detail"]


def test_a_private_submission_is_hidden_from_others(client, alice, bob, make_submission):
    sub = make_submission(alice, visibility=Submission.Visibility.PRIVATE)
    assert client.get(f"/api/v1/submissions/{sub.pk}/").status_code == 404
    assert client.get(f"/s/{sub.pk}/").status_code == 404
    client.force_login(bob)
    assert client.get(f"/s/{sub.pk}/").status_code == 404
    client.force_login(alice)
    assert client.get(f"/s/{sub.pk}/").status_code == 200


def test_the_openapi_schema_describes_the_submission_endpoints(client):
    response = client.get("/api/v1/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    schema = json.loads(response.content)
    assert "/api/v1/submissions/" in schema["paths"]
    assert "post" in schema["paths"]["/api/v1/submissions/"]
    assert "/api/v1/benchmarks/{slug}/leaderboard/" in schema["paths"]


def test_the_benchmark_list_carries_every_catalogue_task(client):
    from runner.catalogue import CATALOGUE

    body = client.get("/api/v1/benchmarks/").json()
    assert {b["slug"] for b in body} == {b.slug for b in CATALOGUE}
    tasks = {t["slug"] for b in body for t in b["tasks"]}
    for slug in ["cifar10", "cifar100-c", "imagenet-a", "imagenet-c", "geode", "dollarstreet", "digits",
                 "denoise-kodak-gamma50", "denoise-skimage-gray-gauss25", "opt-f3", "opt-digits",
                 "opt-cifar10-resnet18", "opt-cifar100-resnet18"]:
        assert slug in tasks
    assert len(tasks) == 54


def test_the_submit_page_documents_every_optimizer_hook_the_runner_offers(client, alice):
    """A hook the runner serves but the page never names is one a researcher cannot find; the
    runner's two declarations (parent and sandboxed server) must agree too."""
    import typing

    from runner import opt_server
    from runner.sandboxed import optimizer_server

    assert opt_server.HOOKS == optimizer_server.HOOKS == typing.get_args(opt_server.Hook)
    client.force_login(alice)
    page = client.get("/submit/").content.decode()
    hooks = page[page.index('id="optimizer-hooks"'):]
    for hook in ("closure", *opt_server.HOOKS):
        assert f"<strong>{hook}</strong>" in hooks, hook
    assert "wants_&lt;hook&gt; = True" in hooks
