"""The runner HTTP API: claim, heartbeat, artifact, result and failure, as a runner node uses it."""
from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.utils import timezone

from leaderboard.submissions.models import EvaluationJob, Submission
from runner.spec import ErrorKind, JobSpec
from tests.conftest import OPTIMIZER_SOURCE, synthetic_result

pytestmark = pytest.mark.django_db


def first_job(sub) -> EvaluationJob:
    return sub.jobs.select_related("task").order_by("task__position").first()


def test_a_runner_without_a_valid_token_is_refused(client, alice, make_submission):
    job = first_job(make_submission(alice))
    assert client.post(f"/api/runner/v1/jobs/{job.pk}/claim/").status_code == 401
    response = client.post(f"/api/runner/v1/jobs/{job.pk}/claim/", HTTP_AUTHORIZATION="Bearer nope")
    assert response.status_code == 401


def test_a_claim_hands_over_the_job_spec_and_starts_attempt_one(runner_api, alice, make_submission):
    sub = make_submission(alice, hparams={"lr": 0.05})
    job = first_job(sub)
    response = runner_api.claim(job.pk)
    assert response.status_code == 200
    spec = JobSpec.from_dict(response.json()["spec"])
    assert (spec.job_id, spec.attempt, spec.task.slug) == (job.pk, 1, "opt-f1")
    assert spec.task.params == {"function": "f1", "x0": -1.0, "steps": 300}
    assert spec.submission.hparams == {"lr": 0.05}
    assert spec.submission.artifact_sha256 == hashlib.sha256(OPTIMIZER_SOURCE).hexdigest()
    job.refresh_from_db()
    sub.refresh_from_db()
    assert job.state == EvaluationJob.State.RUNNING and job.runner.name == "gpu-node-1"
    assert sub.status == Submission.Status.RUNNING


def test_a_second_claim_of_a_live_attempt_gets_409(runner_api, second_runner_api, alice, make_submission):
    job = first_job(make_submission(alice))
    assert runner_api.claim(job.pk).status_code == 200
    assert second_runner_api.claim(job.pk).status_code == 409
    assert runner_api.claim(job.pk).status_code == 409
    job.refresh_from_db()
    assert job.attempt == 1


def test_a_heartbeat_extends_the_lease_and_records_progress(runner_api, alice, make_submission, settings):
    job = first_job(make_submission(alice))
    runner_api.claim(job.pk)
    EvaluationJob.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() + timedelta(seconds=1))
    response = runner_api.heartbeat(job.pk, 1, progress=0.4)
    assert response.status_code == 200
    job.refresh_from_db()
    assert job.progress == pytest.approx(0.4)
    assert job.lease_expires_at > timezone.now() + timedelta(seconds=settings.JOB_LEASE_SECONDS - 5)


def test_a_heartbeat_for_a_stale_attempt_tells_the_runner_to_stop(runner_api, alice, make_submission):
    job = first_job(make_submission(alice))
    runner_api.claim(job.pk)
    assert runner_api.heartbeat(job.pk, 2).status_code == 409


def test_the_artifact_streams_with_its_checksum_to_the_live_attempt_only(runner_api, second_runner_api, alice, make_submission):
    job = first_job(make_submission(alice))
    runner_api.claim(job.pk)
    response = runner_api.artifact(job.pk, 1)
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert body == OPTIMIZER_SOURCE
    assert response["X-Artifact-SHA256"] == hashlib.sha256(body).hexdigest()
    assert second_runner_api.artifact(job.pk, 1).status_code == 409


def test_a_valid_result_ends_the_job_and_a_duplicate_post_changes_nothing(runner_api, alice, make_submission, django_capture_on_commit_callbacks):
    job = first_job(make_submission(alice))
    runner_api.claim(job.pk)
    doc = synthetic_result("opt-f1", final_loss=0.02)
    with django_capture_on_commit_callbacks(execute=True):
        first = runner_api.result(job.pk, 1, doc)
    assert first.status_code == 200 and first.json() == {"state": "succeeded", "duplicate": False}
    job.refresh_from_db()
    finished_at = job.finished_at
    again = runner_api.result(job.pk, 1, synthetic_result("opt-f1", final_loss=99.0))
    assert again.status_code == 200 and again.json()["duplicate"] is True
    job.refresh_from_db()
    assert job.result["metrics"]["final_loss"] == 0.02
    assert job.finished_at == finished_at


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["metrics"].pop("final_loss"), "lacks final_loss"),
        (lambda d: d["metrics"].update(final_loss=float("nan")), "not a finite number"),
        (lambda d: d.update(task="opt-f2"), "not 'opt-f1'"),
        (lambda d: d.update(schema=99), "schema"),
        (lambda d: d["curves"].clear(), "trajectory"),
        (lambda d: d.update(ci95={"final_loss": [2.0, 1.0]}), "low 2.0 above high"),
    ],
)
def test_a_result_that_breaks_the_spec_is_refused_and_the_job_stays_running(runner_api, alice, make_submission, mutate, message):
    job = first_job(make_submission(alice))
    runner_api.claim(job.pk)
    doc = synthetic_result("opt-f1")
    mutate(doc)
    response = runner_api.post(f"jobs/{job.pk}/result/", {"attempt": 1, "result": doc})
    assert response.status_code == 400
    assert message in response.json()["detail"]
    job.refresh_from_db()
    assert job.state == EvaluationJob.State.RUNNING and job.result is None


def test_a_user_error_fails_the_job_and_names_the_task(runner_api, alice, make_submission, django_capture_on_commit_callbacks):
    sub = make_submission(alice)
    jobs = list(sub.jobs.select_related("task"))
    for job in jobs:
        runner_api.claim(job.pk)
    with django_capture_on_commit_callbacks(execute=True):
        runner_api.fail(jobs[0].pk, 1, ErrorKind.RUNTIME_ERROR, "step() raised ZeroDivisionError")
        for job in jobs[1:]:
            runner_api.result(job.pk, 1, synthetic_result(job.task.slug))
    sub.refresh_from_db()
    assert sub.status == Submission.Status.FAILED
    assert "opt-f1: step() raised ZeroDivisionError" in sub.error_message
    assert sub.counts_against_quota is True


def test_an_infrastructure_error_requeues_the_job_for_another_attempt(runner_api, second_runner_api, alice, make_submission, django_capture_on_commit_callbacks):
    job = first_job(make_submission(alice))
    runner_api.claim(job.pk)
    with django_capture_on_commit_callbacks(execute=True):
        response = runner_api.fail(job.pk, 1, ErrorKind.DATASET_MISSING, "no dataset here")
    assert response.json()["state"] == "pending"
    job.refresh_from_db()
    assert job.state == EvaluationJob.State.DISPATCHED and job.dispatches == 2
    assert second_runner_api.claim(job.pk).json()["spec"]["attempt"] == 2


def test_infrastructure_failures_past_the_attempt_limit_fail_without_counting(runner_api, alice, make_submission, settings, django_capture_on_commit_callbacks):
    settings.JOB_MAX_ATTEMPTS = 2
    sub = make_submission(alice)
    for job in sub.jobs.all():
        for attempt in (1, 2):
            assert runner_api.claim(job.pk).status_code == 200
            with django_capture_on_commit_callbacks(execute=True):
                runner_api.fail(job.pk, attempt, ErrorKind.RUNNER_ERROR, "CUDA driver crashed")
    sub.refresh_from_db()
    assert sub.status == Submission.Status.FAILED
    assert sub.counts_against_quota is False


def test_an_unknown_error_kind_is_refused(runner_api, alice, make_submission):
    job = first_job(make_submission(alice))
    runner_api.claim(job.pk)
    assert runner_api.fail(job.pk, 1, "gremlins").status_code == 400


def test_a_cancelled_submission_tells_its_runner_to_stop(runner_api, alice, make_submission):
    from leaderboard.submissions.services import submission_cancel

    sub = make_submission(alice)
    job = first_job(sub)
    runner_api.claim(job.pk)
    submission_cancel(submission_id=sub.pk)
    assert runner_api.heartbeat(job.pk, 1).status_code == 409
    assert runner_api.result(job.pk, 1, synthetic_result("opt-f1")).status_code == 409
