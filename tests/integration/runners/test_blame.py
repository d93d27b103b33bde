"""Whose fault, from the site's side: a runner reports each error kind through the runner API,
and the site ends the job and counts the submission (the submission's kinds) or retries it and
never counts it (the platform's), as docs/errors.md says. The reaper's own two kinds are also
decided in tests/integration/runners/test_reaper.py; the runner's side is tests/runner/test_blame.py."""
from __future__ import annotations

import pytest

from leaderboard.jobs.transitions import INFRASTRUCTURE_NOTE
from leaderboard.submissions.models import EvaluationJob, Submission
from leaderboard.submissions.services import user_quota
from runner.spec import ERROR_KINDS, is_user_error

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("kind", sorted(ERROR_KINDS))
def test_each_reported_kind_ends_or_retries_the_job_and_counts_only_when_it_is_the_submissions(
        kind, runner_api, second_runner_api, alice, make_submission, finish_job, settings, client,
        django_capture_on_commit_callbacks):
    settings.JOB_MAX_ATTEMPTS, settings.SUBMISSIONS_PER_DAY = 2, 10
    sub = make_submission(alice)
    job, *others = sub.jobs.select_related("task").order_by("task__position")
    for other in others:
        finish_job(runner_api, other)

    assert runner_api.claim(job.pk).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        answer = runner_api.fail(job.pk, 1, kind, f"the fault of kind {kind}").json()
    job.refresh_from_db()
    if is_user_error(kind):
        assert answer["state"] == "failed" and job.state == EvaluationJob.State.FAILED and job.attempt == 1
    else:
        # Retried: back in its queue, and another runner's claim starts attempt 2.
        assert answer["state"] == "pending" and job.state == EvaluationJob.State.DISPATCHED
        assert job.progress_message == f"retrying after: {kind}"
        assert second_runner_api.claim(job.pk).json()["spec"]["attempt"] == 2
        with django_capture_on_commit_callbacks(execute=True):
            assert second_runner_api.fail(job.pk, 2, kind, f"the fault of kind {kind}").json()["state"] == "failed"
        job.refresh_from_db()
        assert job.state == EvaluationJob.State.FAILED and INFRASTRUCTURE_NOTE in job.error_message

    sub.refresh_from_db()
    assert sub.status == Submission.Status.FAILED and sub.error_code == kind
    assert sub.counts_against_quota is is_user_error(kind)
    assert user_quota(user=alice).per_day_left == (9 if is_user_error(kind) else 10)
    client.force_login(alice)
    page = client.get(sub.get_absolute_url()).content.decode()
    assert f"{kind}: the fault of kind {kind}" in page
    assert ("does not count against your quota" in page) is not is_user_error(kind)
