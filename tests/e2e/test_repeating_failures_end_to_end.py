"""End to end: an optimizer that fails in a way certain to recur (LBFGS, whose step needs a
closure) runs on one task of opt-synthetic; the site skips the other two, and the runner that
receives them claims nothing."""
from __future__ import annotations

import pytest

from leaderboard.submissions.models import EvaluationJob, Submission
from runner.spec import ErrorKind

from .test_worker_end_to_end import lifecycle_settings, redis_url, runners, submit, wait_for  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LBFGS = b'''
import torch


def make_optimizer(params, lr=1.0):
    return torch.optim.LBFGS(params, lr=lr)
'''


def test_an_lbfgs_submission_runs_one_task_and_the_other_two_are_skipped_unclaimed(
        alice, redis_url, runners, lifecycle_settings):  # noqa: F811
    node = runners("node-lbfgs", redis_url)
    sub = submit(alice, LBFGS, "lbfgs")
    wait_for(lambda: Submission.objects.get(pk=sub.pk).status == Submission.Status.FAILED, 180, reap=True,
             what="the LBFGS submission to fail", runners=[node])
    jobs = {job.task.slug: job for job in sub.jobs.select_related("task")}
    ran = [slug for slug, job in jobs.items() if job.attempt > 0]
    assert len(ran) == 1, f"claimed: {ran}"
    first, skipped = ran[0], sorted(set(jobs) - set(ran))
    failed = jobs[first]
    assert failed.state == EvaluationJob.State.FAILED and failed.error_kind == ErrorKind.INVALID_ARTIFACT
    assert failed.error_message.startswith("LBFGS.step needs a closure") and "\n" not in failed.error_message
    for slug in skipped:
        assert jobs[slug].state == EvaluationJob.State.CANCELLED
        assert jobs[slug].error_message == f"skipped: same failure as {first}"
    sub.refresh_from_db()
    assert sub.error_message == (f"failed on {first}: {failed.error_message}; {', '.join(skipped)} skipped: same "
                                 f"failure as {first}")
    assert sub.counts_against_quota is True
    # the runner still receives the other two wake-ups, and drops them without running anything
    wait_for(lambda: node.log.read_text().count("not claimed") == 2, 60, what="the runner to drop the two skipped jobs",
             runners=[node])
    assert node.log.read_text().count("attempt 1 of opt-f") == 1
