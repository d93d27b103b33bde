"""A failure certain to recur on a submission's other tasks (runner/spec.py failure_repeats: the
artifact does not load, an import error, hyperparameters it refuses) ends those tasks at once as
"skipped: same failure as <task>"; a failure that depends on the task's data leaves them running."""
from __future__ import annotations

import pytest

from leaderboard.submissions.models import EvaluationJob, Submission
from leaderboard.submissions.services import user_quota
from runner.spec import ErrorKind

pytestmark = pytest.mark.django_db

IMPORT_ERROR = ("importing the submission raised ModuleNotFoundError: No module named 'adabelief_pytorch' "
                "(line 2 in <module>)")


def jobs_by_task(sub) -> dict[str, EvaluationJob]:
    return {job.task.slug: job for job in sub.jobs.select_related("task")}


def fail(api, job, kind: str, message: str, django_capture_on_commit_callbacks, **extra):
    with django_capture_on_commit_callbacks(execute=True):
        return api.post(f"jobs/{job.pk}/fail/", {"attempt": 1, "kind": kind, "message": message, **extra})


def test_a_failure_marked_as_repeating_skips_the_other_tasks_frees_the_slot_and_counts_once(
        client, runner_api, second_runner_api, alice, make_submission, django_capture_on_commit_callbacks):
    before = user_quota(user=alice)
    sub = make_submission(alice)
    jobs = jobs_by_task(sub)
    assert runner_api.claim(jobs["opt-f1"].pk).status_code == 200
    assert second_runner_api.claim(jobs["opt-f2"].pk).status_code == 200  # opt-f3 stays dispatched

    response = fail(runner_api, jobs["opt-f1"], ErrorKind.RUNTIME_ERROR, IMPORT_ERROR,
                    django_capture_on_commit_callbacks, repeats=True)
    assert response.status_code == 200 and response.json()["state"] == "failed"

    jobs = jobs_by_task(sub)
    for slug in ("opt-f2", "opt-f3"):
        assert jobs[slug].state == EvaluationJob.State.CANCELLED
        assert jobs[slug].error_message == "skipped: same failure as opt-f1"
        assert jobs[slug].error_kind == ""
    # the running one's runner is told to stop; the dispatched one is never claimed
    assert second_runner_api.heartbeat(jobs["opt-f2"].pk, 1).status_code == 409
    assert runner_api.claim(jobs["opt-f3"].pk).status_code == 409

    sub.refresh_from_db()
    assert sub.status == Submission.Status.FAILED and sub.error_code == ErrorKind.RUNTIME_ERROR
    assert sub.error_message == (f"failed on opt-f1: {IMPORT_ERROR}; opt-f2, opt-f3 skipped: same failure as opt-f1")
    after = user_quota(user=alice)
    assert after.per_day_left == before.per_day_left - 1  # one submission, counted once
    assert after.concurrent_left == before.concurrent_left  # its slot is free again

    page = client.get(f"/s/{sub.pk}/").content.decode()  # as a visitor sees it
    assert "failed on opt-f1: importing the submission raised ModuleNotFoundError" in page
    assert "opt-f2, opt-f3 skipped: same failure as opt-f1" in page
    assert page.count('<span class="outcome">skipped: same failure as opt-f1</span>') == 2


def test_a_file_that_does_not_load_skips_the_other_tasks_whether_or_not_the_runner_marks_it(
        runner_api, alice, make_submission, django_capture_on_commit_callbacks):
    sub = make_submission(alice)
    jobs = jobs_by_task(sub)
    runner_api.claim(jobs["opt-f2"].pk)
    message = "optimizer.step of LBFGS needs a closure (step(closure)), which this task does not provide yet"
    assert fail(runner_api, jobs["opt-f2"], ErrorKind.INVALID_ARTIFACT, message,
                django_capture_on_commit_callbacks).status_code == 200
    jobs = jobs_by_task(sub)
    assert [jobs[s].state for s in ("opt-f1", "opt-f3")] == [EvaluationJob.State.CANCELLED] * 2
    sub.refresh_from_db()
    assert sub.error_message == f"failed on opt-f2: {message}; opt-f1, opt-f3 skipped: same failure as opt-f2"


@pytest.mark.parametrize("kind", [ErrorKind.NOT_FINITE, ErrorKind.TIMEOUT, ErrorKind.RUNTIME_ERROR])
def test_a_failure_that_depends_on_the_tasks_data_leaves_the_other_tasks_running(
        runner_api, second_runner_api, alice, make_submission, django_capture_on_commit_callbacks, kind):
    sub = make_submission(alice)
    jobs = jobs_by_task(sub)
    runner_api.claim(jobs["opt-f1"].pk)
    second_runner_api.claim(jobs["opt-f2"].pk)
    assert fail(runner_api, jobs["opt-f1"], kind, "x became nan at step 17",
                django_capture_on_commit_callbacks).status_code == 200
    jobs = jobs_by_task(sub)
    assert jobs["opt-f1"].state == EvaluationJob.State.FAILED
    assert jobs["opt-f2"].state == EvaluationJob.State.RUNNING
    assert jobs["opt-f3"].state == EvaluationJob.State.DISPATCHED
    assert second_runner_api.heartbeat(jobs["opt-f2"].pk, 1).status_code == 200
    assert runner_api.claim(jobs["opt-f3"].pk).status_code == 200
    sub.refresh_from_db()
    assert sub.status == Submission.Status.RUNNING


@pytest.mark.parametrize("kind, repeats, detail", [
    (ErrorKind.NOT_FINITE, True, "a not_finite failure cannot repeat on every task"),
    (ErrorKind.TIMEOUT, True, "a timeout failure cannot repeat on every task"),
    (ErrorKind.DATASET_MISSING, True, "a dataset_missing failure cannot repeat on every task"),
    (ErrorKind.RUNTIME_ERROR, "yes", "repeats must be true or false, not str"),
])
def test_the_site_refuses_a_repeating_mark_the_failure_cannot_carry(
        runner_api, alice, make_submission, django_capture_on_commit_callbacks, kind, repeats, detail):
    sub = make_submission(alice)
    jobs = jobs_by_task(sub)
    runner_api.claim(jobs["opt-f1"].pk)
    response = fail(runner_api, jobs["opt-f1"], kind, "it broke", django_capture_on_commit_callbacks,
                    repeats=repeats)
    assert response.status_code == 400 and detail in response.json()["detail"]
    assert {job.state for job in jobs_by_task(sub).values()} == {EvaluationJob.State.RUNNING,
                                                                   EvaluationJob.State.DISPATCHED}
