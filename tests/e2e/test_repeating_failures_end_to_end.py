"""End to end: an optimizer that fails in a way certain to recur (a step the runner cannot call, a
package the sandbox lacks) runs on one task of opt-synthetic; the site skips the other two, and
the runner that receives them claims nothing. (LBFGS, the issue's example, runs on opt-f1..3 since
the runner's loop gives it closures.)"""
from __future__ import annotations

import pytest

from leaderboard.submissions.models import EvaluationJob, Submission
from runner.spec import ErrorKind

from .test_worker_end_to_end import lifecycle_settings, redis_url, runners, submit, wait_for  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

STEP_WANTS_TWO_ARGUMENTS = b'''
import torch


class NeedsTwo(torch.optim.SGD):
    def step(self, loss, scale):
        return super().step()


def make_optimizer(params, lr=0.05):
    return NeedsTwo(params, lr=lr)
'''
MISSING_PACKAGE = b'''
from adabelief_pytorch import AdaBelief


def make_optimizer(params, lr=1e-3):
    return AdaBelief(params, lr=lr)
'''


@pytest.mark.parametrize("source, kind, starts", [
    (STEP_WANTS_TWO_ARGUMENTS, ErrorKind.INVALID_ARTIFACT, "NeedsTwo.step(loss, scale) cannot be called as step()"),
    (MISSING_PACKAGE, ErrorKind.RUNTIME_ERROR, "importing the submission raised ModuleNotFoundError"),
], ids=["uncallable-step", "missing-package"])
def test_a_submission_failing_for_good_runs_one_task_and_the_other_two_are_skipped_unclaimed(
        alice, redis_url, runners, lifecycle_settings, source, kind, starts):  # noqa: F811
    node = runners("node-repeats", redis_url)
    sub = submit(alice, source, "fails-for-good")
    wait_for(lambda: Submission.objects.get(pk=sub.pk).status == Submission.Status.FAILED, 180, reap=True,
             what="the submission to fail", runners=[node])
    jobs = {job.task.slug: job for job in sub.jobs.select_related("task")}
    ran = [slug for slug, job in jobs.items() if job.attempt > 0]
    assert len(ran) == 1, f"claimed: {ran}"
    first, skipped = ran[0], sorted(set(jobs) - set(ran))
    failed = jobs[first]
    assert failed.state == EvaluationJob.State.FAILED and failed.error_kind == kind
    assert failed.error_message.startswith(starts) and "\n" not in failed.error_message
    for slug in skipped:
        assert jobs[slug].state == EvaluationJob.State.CANCELLED
        assert jobs[slug].error_message == f"skipped: same failure as {first}"
    sub.refresh_from_db()
    assert sub.error_message == (f"failed on {first}: {failed.error_message}; {', '.join(skipped)} skipped: same "
                                 f"failure as {first}")
    assert sub.counts_against_quota is True
    # the runner still receives the other two wake-ups, and drops them without running anything
    wait_for(lambda: node.log.read_text().count(": 'not_claimed'") == 2, 60,
             what="the runner to drop the two skipped jobs", runners=[node])
    assert node.log.read_text().count("attempt 1 of opt-f") == 1
