"""Uploading a classifier as .safetensors weights plus the library architecture they belong to
(issue 19 item 1): the site checks what it can without torch (the architecture against the
shipped allow-list, the hyperparameters' shape, the file's header against its length) and says
what is wrong on the right field, through the form and the API alike."""
from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

import runner
from leaderboard.accounts.models import ApiToken
from leaderboard.submissions.models import Submission
from leaderboard.submissions.validation import submission_validate

pytestmark = pytest.mark.django_db

HPARAMS = {"architecture": "torchvision:resnet18", "num_classes": 10,
           "mean": [0.4914, 0.4822, 0.4465], "std": [0.247, 0.2435, 0.2616]}
_IDENTITY_DENOISER = (Path(runner.__file__).parent / "baselines" / "denoisers" / "identity.pt").read_bytes()


def safetensors_bytes(tensors: dict[str, tuple[str, list[int]]] | None = None, *, header: dict | None = None,
                      data: bytes | None = None) -> bytes:
    """A safetensors file written by hand (the site's tests never import torch): zero-filled tensors."""
    sizes = {"F32": 4, "F16": 2, "I64": 8}
    if header is None:
        header, offset = {}, 0
        for name, (dtype, shape) in (tensors or {"fc.weight": ("F32", [10, 4]), "fc.bias": ("F32", [10])}).items():
            length = sizes[dtype] * (1 if not shape else math.prod(shape))
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + length]}
            offset += length
        data = b"\0" * offset if data is None else data
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + (data or b"")


def form_post(client, *, benchmark="cifar10", filename="resnet18.safetensors", content=None, hparams=None):
    return client.post("/submit/", {
        "benchmark": benchmark, "name": "my resnet", "visibility": "public",
        "hparams": json.dumps(HPARAMS if hparams is None else hparams),
        "artifact": SimpleUploadedFile(filename, safetensors_bytes() if content is None else content),
    })


def test_weights_and_an_architecture_are_queued_on_every_task_of_the_benchmark(
        client, alice, catalogue, django_capture_on_commit_callbacks):
    client.force_login(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = form_post(client)
    assert response.status_code == 302, response.context["form"].errors if response.context else response
    sub = Submission.objects.get(owner=alice)
    assert sub.artifact_format == "safetensors" and sub.hparams == HPARAMS
    assert sub.status == Submission.Status.QUEUED
    assert sorted(sub.jobs.values_list("task__slug", flat=True)) == ["cifar10", "cifar10-c"]


@pytest.mark.parametrize(("hparams", "content", "field", "fragment"), [
    ({**HPARAMS, "architecture": "torchvision:../../os.system"}, None, "hparams",
     "Architecture 'torchvision:../../os.system': torchvision has no classifier of that name"),
    ({**HPARAMS, "architecture": "timm:resnet18,pretrained=True"}, None, "hparams", "timm has no classifier"),
    ({**HPARAMS, "architecture": "timm:"}, None, "hparams", "timm has no classifier"),
    ({**HPARAMS, "num_classes": 10**9}, None, "hparams", "Num_classes must be a whole number from 1 to 100,000"),
    ({**HPARAMS, "mean": [0.5]}, None, "hparams", "Mean must be 3 numbers"),
    ({k: v for k, v in HPARAMS.items() if k != "architecture"}, None, "hparams",
     "name their architecture in the hyperparameters"),
    ({**HPARAMS, "epochs": 3}, None, "hparams", "takes no hyperparameter epochs"),
    # A header claiming a 4 TB tensor in a file of 40 bytes.
    (HPARAMS, safetensors_bytes(header={"w": {"dtype": "F32", "shape": [10**6, 10**6],
                                              "data_offsets": [0, 4 * 10**12]}}, data=b"\0" * 40),
     "artifact", "fall outside the file's 40 data bytes"),
    (HPARAMS, safetensors_bytes(header={"w": {"dtype": "F16", "shape": [4], "data_offsets": [0, 4]}}, data=b"\0" * 4),
     "artifact", "shape [4] of F16 needs 8 bytes, its offsets hold 4"),
])
def test_a_bad_architecture_or_file_is_one_message_on_its_field_and_nothing_is_stored(
        client, alice, catalogue, hparams, content, field, fragment):
    client.force_login(alice)
    response = form_post(client, hparams=hparams, content=content)
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert field in errors, errors
    assert fragment in " ".join(errors[field]), errors
    assert not Submission.objects.exists()


def test_an_exported_model_may_not_name_an_architecture_and_a_denoiser_may_not_be_weights(client, alice, catalogue):
    client.force_login(alice)
    response = form_post(client, benchmark="denoise-skimage-gray", filename="identity.pt",
                         content=_IDENTITY_DENOISER, hparams={"architecture": "torchvision:resnet18"})
    assert "this file is torchscript, which carries its own architecture" in " ".join(
        response.context["form"].errors["hparams"])
    response = form_post(client, benchmark="denoise-skimage-gray", hparams={})
    assert "has a denoising architecture" in " ".join(response.context["form"].errors["hparams"])
    assert not Submission.objects.exists()


def test_the_api_takes_weights_with_their_architecture_and_names_a_bad_one(client, alice, catalogue):
    token = ApiToken.issue(user=alice, name="laptop")[1]

    def post(hparams: dict):
        return client.post("/api/v1/submissions/", {
            "benchmark": "cifar10", "name": "api resnet", "hparams": json.dumps(hparams),
            "artifact": SimpleUploadedFile("r.safetensors", safetensors_bytes())}, HTTP_AUTHORIZATION=f"Token {token}")

    refused = post({**HPARAMS, "architecture": "timm:convnext_tinyy"})
    assert refused.status_code == 400
    assert "timm has no classifier of that name" in refused.json()["hparams"][0]
    accepted = post({**HPARAMS, "architecture": "timm:convnext_tiny"})
    assert accepted.status_code == 201, accepted.content
    assert Submission.objects.get(pk=accepted.json()["id"]).artifact_format == "safetensors"


def test_validation_rejects_a_stored_file_whose_header_no_longer_fits(alice, catalogue):
    """The validation task re-reads the stored file: a header that does not fit its tensors (a file
    replaced on the storage behind the site's back, its checksum with it) rejects the submission."""
    from leaderboard.benchmarks.models import Benchmark
    from leaderboard.submissions.services import submission_create

    sub = submission_create(owner=alice, benchmark=Benchmark.objects.get(slug="cifar10"), name="r",
                            upload=SimpleUploadedFile("r.safetensors", safetensors_bytes()), hparams=HPARAMS)
    assert sub.status == Submission.Status.UPLOADED
    bad = safetensors_bytes(header={"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, data=b"\0" * 8)
    with sub.artifact.open("wb") as fh:
        fh.write(bad)
    Submission.objects.filter(pk=sub.pk).update(artifact_sha256=hashlib.sha256(bad).hexdigest(), artifact_size=len(bad))
    done = submission_validate(submission_id=sub.pk)
    assert done.status == Submission.Status.REJECTED and done.error_code == "bad_format"
    assert "cover 4 of the file's 8 data bytes" in done.error_message


def test_the_submit_page_shows_how_to_submit_weights_without_an_export(client, alice, catalogue):
    client.force_login(alice)
    page = client.get("/submit/").content.decode()
    assert 'safetensors.torch.save_file(model.state_dict(), "model.safetensors")' in page
    assert '{"architecture": "torchvision:resnet18", "num_classes": 10' in page
