"""Hostile and mistaken uploads: a .safetensors header whose fields have the wrong JSON types,
hyperparameters or results holding integers too large for a float (JSON allows them; Python's
``math.isfinite`` raises OverflowError on them). Each is refused with a message on the field at
fault, through the submit form and the runner API alike, never a server error."""
from __future__ import annotations

import pytest

from leaderboard.submissions.models import EvaluationJob, Submission
from runner.spec import make_result

from .test_safetensors_uploads import HPARAMS, form_post, safetensors_bytes

pytestmark = pytest.mark.django_db
HUGE = 10 ** 400  # a valid JSON number no float can hold


def _header(**entry) -> bytes:
    return safetensors_bytes(header={"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], **entry}},
                             data=b"\0" * 4)


@pytest.mark.parametrize(("hparams", "content", "field", "fragment"), [
    ({**HPARAMS, "mean": [HUGE, 0.5, 0.5]}, None, "hparams", "Mean must be 3 numbers, one per RGB channel"),
    ({**HPARAMS, "std": [1, 1, HUGE]}, None, "hparams", "Std must be 3 numbers"),
    (HPARAMS, _header(dtype=["F32"]), "artifact", "Tensor 'w' is ['F32']; weights must be floating point"),
    (HPARAMS, _header(dtype={"F32": 1}), "artifact", "weights must be floating point"),
    (HPARAMS, safetensors_bytes(header={"__metadata__": ["format", "pt"],
                                        "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, data=b"\0" * 4),
     "artifact", "__metadata__ must be an object of strings"),
    (HPARAMS, safetensors_bytes(header={"__metadata__": {"format": 1},
                                        "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, data=b"\0" * 4),
     "artifact", "__metadata__ must be an object of strings"),
    (HPARAMS, b"", "artifact", ""),  # an empty file: refused (by the form's own empty-file rule)
    # too short to be safetensors: the message lists every accepted format, weights included
    (HPARAMS, b"\xff" * 7, "artifact", "ONNX (.onnx) or classifier weights as .safetensors"),
])
def test_a_hostile_safetensors_upload_is_refused_on_its_field(client, alice, catalogue, hparams, content, field,
                                                              fragment):
    client.force_login(alice)
    response = form_post(client, hparams=hparams, content=content)
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert field in errors, errors
    assert fragment in " ".join(errors[field]), errors
    assert not Submission.objects.exists()


@pytest.mark.parametrize("damage", [
    {"metrics": {"top1": HUGE, "top5": 100.0}},
    {"metrics": {"top1": 50.0, "top5": 100.0}, "timing": {"wall_s": HUGE}},
    {"metrics": {"top1": 50.0, "top5": 100.0}, "ci95": {"top1": [0, HUGE]}},
])
def test_a_result_with_an_integer_too_large_for_a_float_is_refused_not_a_server_error(
        runner_api, make_submission, alice, damage):
    from runner.baselines.classifiers import FOLDER

    sub = make_submission(alice, benchmark="digits", source=(FOLDER / "digits_cnn.pt").read_bytes(),
                          filename="model.pt", hparams={"precision": "fp32"}, name="digits cnn")
    job = sub.jobs.get()
    assert runner_api.claim(job.pk).status_code == 200
    doc = make_result("digits", {"top1": 50.0, "top5": 100.0}, timing={"wall_s": 1.0})
    doc.update(damage)
    response = runner_api.result(job.pk, 1, doc)
    assert response.status_code == 400, response.content
    assert "not a finite number" in response.json()["detail"] and "integer of 1329 bits" in response.json()["detail"]
    assert EvaluationJob.objects.get(pk=job.pk).state == EvaluationJob.State.RUNNING
