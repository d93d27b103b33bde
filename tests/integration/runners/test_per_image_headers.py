"""The per-image upload's Content-Length as a hostile or broken runner sends it: not a number,
negative, or past any size. Each is refused for what it is (not for a sha256 the body never had)."""
from __future__ import annotations

import pytest

from runner.per_image_file import npz_bytes

from .test_per_image_upload import arrays, classifier_job, succeed

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("length", "status", "message"), [
    ("abc", 400, "Content-Length must be a number of bytes"),
    ("-5", 400, "Content-Length must be a number of bytes"),
    ("9" * 30, 413, "a per-image file may have at most"),
])
def test_a_lying_content_length_is_refused_for_what_it_is(runner_api, alice, make_submission, length, status,
                                                         message):
    job = classifier_job(make_submission, alice)
    payload = npz_bytes(arrays())
    succeed(runner_api, job, payload)
    response = runner_api.client.generic("POST", f"/api/runner/v1/jobs/{job.pk}/per-image/?attempt=1", data=payload,
                                         content_type="application/octet-stream", CONTENT_LENGTH=length,
                                         **runner_api.auth)
    assert response.status_code == status
    assert message in response.json()["detail"]
    job.refresh_from_db()
    assert not job.per_image
