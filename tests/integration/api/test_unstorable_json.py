"""JSON that parses but that no database can store, or that nests past Python's recursion limit, is
the sender's 400 with a message, never a 500: NUL characters and lone surrogates in hyperparameters
(PostgreSQL refuses both in jsonb), and bodies nested 100,000 deep, through the API, the form and
the runner API."""
from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from leaderboard.accounts.models import ApiToken
from leaderboard.submissions.models import Submission
from tests.conftest import OPTIMIZER_SOURCE

pytestmark = pytest.mark.django_db

DEEP = "[" * 100_000 + "]" * 100_000
UNSTORABLE = [
    ('{"lr": "0.1\\u0000"}', "NUL"),
    ('{"lr\\u0000": 0.1}', "NUL"),
    ('{"betas": [0.9, {"x": ["\\ud800"]}]}', "lone surrogate"),
    ('{"lr": "\\udfff"}', "lone surrogate"),
]


NOTED_OPTIMIZER = b'''
import torch


def make_optimizer(params, lr=0.1, note=""):
    return torch.optim.SGD(params, lr=lr)
'''


def api_post(client, token, hparams: str, source: bytes = OPTIMIZER_SOURCE):
    return client.post("/api/v1/submissions/", {
        "benchmark": "opt-synthetic", "name": "hostile", "hparams": hparams,
        "artifact": SimpleUploadedFile("sgd.py", source)}, HTTP_AUTHORIZATION=f"Token {token}")


@pytest.mark.parametrize("hparams, what", UNSTORABLE)
def test_the_api_refuses_hyperparameters_no_database_can_store_with_a_400_naming_them(
        client, catalogue, alice, hparams, what):
    token = ApiToken.issue(user=alice, name="laptop")[1]
    response = api_post(client, token, hparams)
    assert response.status_code == 400, response.content
    assert what in " ".join(response.json()["hparams"])
    assert not Submission.objects.exists()


@pytest.mark.parametrize("hparams, what", UNSTORABLE)
def test_the_form_refuses_hyperparameters_no_database_can_store_and_keeps_the_page(
        client, catalogue, alice, hparams, what):
    client.force_login(alice)
    response = client.post("/submit/", {
        "benchmark": "opt-synthetic", "name": "hostile", "hparams": hparams, "visibility": "public",
        "artifact": SimpleUploadedFile("sgd.py", OPTIMIZER_SOURCE)})
    assert response.status_code == 200
    assert what in response.content.decode()
    assert not Submission.objects.exists()


def test_hyperparameters_nested_100000_deep_are_invalid_json_not_a_server_error(client, catalogue, alice):
    token = ApiToken.issue(user=alice, name="laptop")[1]
    response = api_post(client, token, DEEP)
    assert response.status_code == 400 and "not valid JSON" in " ".join(response.json()["hparams"])
    client.force_login(alice)
    page = client.post("/submit/", {"benchmark": "opt-synthetic", "name": "deep", "hparams": DEEP,
                                    "visibility": "public",
                                    "artifact": SimpleUploadedFile("sgd.py", OPTIMIZER_SOURCE)})
    assert page.status_code == 200 and "not valid JSON" in page.content.decode()


def test_a_json_body_nested_100000_deep_is_a_400_for_the_api_and_the_runner_api(client, catalogue, alice,
                                                                                 runner_node):
    token = ApiToken.issue(user=alice, name="laptop")[1]
    response = client.post("/api/v1/submissions/", DEEP, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Token {token}")
    assert response.status_code in (400, 415) and "detail" in response.json()  # uploads are multipart only
    runner_token = runner_node.raw_token
    response = client.post("/api/runner/v1/nodes/heartbeat/", DEEP, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {runner_token}")
    assert response.status_code == 400 and "not JSON" in response.json()["detail"]
    response = client.post("/api/runner/v1/register/", DEEP, content_type="application/json")
    assert response.status_code == 400


def test_ordinary_unicode_in_hyperparameters_is_kept(client, catalogue, alice):
    token = ApiToken.issue(user=alice, name="laptop")[1]
    response = api_post(client, token, json.dumps({"lr": 0.1, "note": "β₁ 😀 \u200b"}), NOTED_OPTIMIZER)
    assert response.status_code == 201, response.content
    assert Submission.objects.get().hparams["note"] == "β₁ 😀 \u200b"


@pytest.mark.parametrize("field", ["benchmark", "name", "model_family"])
def test_a_nul_in_any_form_field_of_an_upload_is_a_400_through_the_api_and_the_form(client, catalogue, alice, field):
    # the API fuzzing's find: a NUL in ``benchmark`` reached the slug lookup (a PostgreSQL DataError, a 500)
    token = ApiToken.issue(user=alice, name="laptop")[1]
    fields = {"benchmark": "opt-synthetic", "name": "hostile", "hparams": "{}", "visibility": "public"}
    fields[field] = "×\x9c¾\x00èW"
    response = client.post("/api/v1/submissions/", {**fields, "artifact": SimpleUploadedFile("a.py", OPTIMIZER_SOURCE)},
                           HTTP_AUTHORIZATION=f"Token {token}")
    assert response.status_code == 400 and field in response.json()["detail"]
    client.force_login(alice)
    page = client.post("/submit/", {**fields, "artifact": SimpleUploadedFile("a.py", OPTIMIZER_SOURCE)})
    assert page.status_code == 400 and field in page.content.decode()
    assert not Submission.objects.exists()


@pytest.mark.parametrize("path", ["/b/digits/?family=Res%00Net", "/b/digits/?task=%00", "/api/v1/benchmarks/digits/leaderboard/?family=%00",
                                  "/b/digits/export.csv?since=%00", "/submit/?benchmark=opt%00"])
def test_a_nul_in_a_query_string_is_a_400_not_a_database_error(client, catalogue, alice, path):
    client.force_login(alice)
    response = client.get(path)
    assert response.status_code == 400 and "NUL" in response.content.decode()


def test_a_runner_report_quoting_a_submissions_nul_bytes_is_kept_with_replacement_characters(
        runner_api, alice, make_submission):
    # a submission that prints NUL bytes or lone surrogates must not make its own failure report unstorable
    job = make_submission(alice).jobs.order_by("task__position").first()
    attempt = runner_api.claim(job.pk).json()["spec"]["attempt"]
    response = runner_api.post(f"jobs/{job.pk}/fail/", {
        "attempt": attempt, "kind": "runtime_error", "message": "boom\x00 \ud800here", "log_tail": "a\x00b"})
    assert response.status_code == 200, response.content
    job.refresh_from_db()
    assert job.state == "failed" and "boom\ufffd \ufffdhere" in job.error_message and "a\ufffdb" in job.log_tail
