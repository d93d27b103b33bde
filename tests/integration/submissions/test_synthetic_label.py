"""A result scored on fake (synthetic) data says so on the submission's own page and in the API,
as it already did on board rows: nothing synthetic is ever presented as real."""
from __future__ import annotations

import pytest

from tests.conftest import synthetic_result

pytestmark = pytest.mark.django_db


def post(runner_api, job, *, synthetic: bool, capture):
    spec = runner_api.claim(job.pk).json()["spec"]
    result = synthetic_result(job.task.slug)
    result["env"]["synthetic_data"] = synthetic
    with capture(execute=True):
        assert runner_api.result(job.pk, spec["attempt"], result).status_code == 200


def test_a_job_scored_on_synthetic_data_is_labelled_on_the_page_and_in_the_api_and_a_real_one_is_not(
        client, alice, make_submission, runner_api, django_capture_on_commit_callbacks):
    sub = make_submission(alice)
    first, second, third = sub.jobs.order_by("task__position")
    post(runner_api, first, synthetic=True, capture=django_capture_on_commit_callbacks)
    post(runner_api, second, synthetic=False, capture=django_capture_on_commit_callbacks)
    page = client.get(f"/s/{sub.pk}/").content.decode()
    row = page.split(f'data-job="{first.pk}"')[1].split("</tr>")[0]
    real_row = page.split(f'data-job="{second.pk}"')[1].split("</tr>")[0]
    assert "synthetic data" in row and "synthetic data" not in real_row
    jobs = {j["id"]: j for j in client.get(f"/api/v1/submissions/{sub.pk}/").json()["jobs"]}
    assert jobs[first.pk]["synthetic_data"] is True and jobs[second.pk]["synthetic_data"] is False
    assert jobs[third.pk]["synthetic_data"] is False
