"""The reaper: dead runners, never-claimed jobs and a broker that was down lose nothing."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from leaderboard.jobs.reaper import jobs_reap
from leaderboard.runners.models import RunnerNode
from leaderboard.submissions.models import EvaluationJob, Submission
from runner.spec import ErrorKind
from tests.conftest import queued_messages, synthetic_result

pytestmark = pytest.mark.django_db


def expire_lease(job):
    EvaluationJob.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


def test_it_requeues_a_job_whose_runner_vanished_and_keeps_exactly_one_result(
        runner_api, second_runner_api, alice, make_submission, django_capture_on_commit_callbacks):
    sub = make_submission(alice)
    job = sub.jobs.get(task__slug="opt-f1")
    assert runner_api.claim(job.pk).status_code == 200  # then the node dies mid-job
    expire_lease(job)
    assert jobs_reap()["expired"] == 1
    job.refresh_from_db()
    assert job.state == EvaluationJob.State.DISPATCHED and job.runner is None
    assert "stopped sending heartbeats" in job.error_message
    spec = second_runner_api.claim(job.pk).json()["spec"]
    assert spec["attempt"] == 2
    with django_capture_on_commit_callbacks(execute=True):
        assert second_runner_api.result(job.pk, 2, synthetic_result("opt-f1", 0.5)).status_code == 200
    # The first node comes back to life and posts its stale result: refused, nothing changes.
    assert runner_api.result(job.pk, 1, synthetic_result("opt-f1", 0.1)).status_code == 409
    job.refresh_from_db()
    assert (job.state, job.result_attempt, job.runner.name) == ("succeeded", 2, "gpu-node-2")
    assert job.result["metrics"]["final_loss"] == 0.5
    assert sub.board_entries.filter(task__slug="opt-f1").count() == 1


def test_a_live_lease_is_left_alone(runner_api, alice, make_submission):
    job = make_submission(alice).jobs.first()
    runner_api.claim(job.pk)
    assert jobs_reap()["expired"] == 0
    job.refresh_from_db()
    assert job.state == EvaluationJob.State.RUNNING


def test_a_job_that_loses_its_runner_too_often_fails_with_a_reason_that_does_not_count(
        runner_api, alice, make_submission, settings):
    settings.JOB_MAX_ATTEMPTS = 2
    sub = make_submission(alice)
    jobs = list(sub.jobs.all())
    for job in jobs:
        for _ in range(2):
            assert runner_api.claim(job.pk).status_code == 200
            expire_lease(job)
            jobs_reap()
    sub.refresh_from_db()
    job = jobs[0]
    job.refresh_from_db()
    assert job.state == EvaluationJob.State.FAILED and job.error_kind == ErrorKind.LEASE_EXPIRED
    assert "stopped answering 2 times" in job.error_message
    assert sub.status == Submission.Status.FAILED and sub.counts_against_quota is False


def _age_dispatches(sub, settings):
    old = timezone.now() - timedelta(seconds=settings.JOB_DISPATCH_TIMEOUT_SECONDS + 1)
    EvaluationJob.objects.filter(submission=sub).update(dispatched_at=old)


def test_a_job_an_idle_runner_never_takes_is_dispatched_again_then_failed_after_the_limit(
        alice, make_submission, settings, _celery_for_tests, runner_node):
    settings.JOB_MAX_DISPATCHES = 2
    RunnerNode.objects.filter(pk=runner_node.pk).update(last_heartbeat=timezone.now())  # online, idle
    sub = make_submission(alice)
    _age_dispatches(sub, settings)
    before = queued_messages(_celery_for_tests)
    assert jobs_reap()["redispatched"] == 3
    assert queued_messages(_celery_for_tests) == before + 3
    job = sub.jobs.get(task__slug="opt-f2")
    assert job.dispatches == 2
    _age_dispatches(sub, settings)
    assert jobs_reap()["failed"] == 3
    job.refresh_from_db()
    assert job.error_kind == ErrorKind.NEVER_CLAIMED and "Idle runners of pool cpu" in job.error_message
    sub.refresh_from_db()
    assert sub.status == Submission.Status.FAILED and not sub.counts_against_quota


def test_a_job_waits_its_turn_while_the_jobs_ahead_of_it_keep_its_pool_busy(
        alice, bob, make_submission, settings, runner_api, runner_node):
    busy = make_submission(bob, name="long one")
    sub = make_submission(alice)
    day_ago = timezone.now() - timedelta(days=1)
    EvaluationJob.objects.filter(submission=busy).update(dispatched_at=day_ago - timedelta(minutes=1))
    EvaluationJob.objects.filter(submission=sub).update(dispatched_at=day_ago, created_at=day_ago)
    runner_api.claim(busy.jobs.first().pk)  # sent before alice's jobs: the pool's only runner is busy
    counts = jobs_reap()
    assert counts["redispatched"] == counts["failed"] == 0
    assert set(sub.jobs.values_list("state", flat=True)) == {EvaluationJob.State.DISPATCHED}


def test_a_job_passed_over_by_a_later_one_had_its_wake_up_lost_and_is_sent_again(
        alice, bob, make_submission, settings, runner_api, runner_node):
    lost = make_submission(alice, name="lost")
    later = make_submission(bob, name="later")
    _age_dispatches(lost, settings)
    runner_api.claim(later.jobs.first().pk)  # FIFO: its message came after lost's
    assert jobs_reap()["redispatched"] == 3
    assert all(j.dispatches == 2 for j in lost.jobs.all())


def test_a_job_fails_only_after_long_with_no_runner_of_its_pool_online(alice, make_submission, settings):
    sub = make_submission(alice)
    _age_dispatches(sub, settings)
    assert jobs_reap()["failed"] == 0  # nobody online yet, but it has not waited long
    EvaluationJob.objects.filter(submission=sub).update(created_at=timezone.now() - timedelta(
        seconds=settings.JOB_DISPATCH_TIMEOUT_SECONDS * settings.JOB_MAX_DISPATCHES + 1))
    assert jobs_reap()["failed"] == 3
    job = sub.jobs.first()
    assert "No runner of pool cpu was online for the 75 minutes this job waited (none has ever reported)" in job.error_message


def test_a_job_dispatched_while_the_broker_is_down_is_sent_once_it_is_back(
        alice, make_submission, _celery_for_tests, runner_api):
    app = _celery_for_tests
    working = (app.conf.broker_url, app.conf.broker_transport_options)
    app.conf.broker_url, app.conf.broker_transport_options = "redis://127.0.0.1:1/0", {}
    try:
        sub = make_submission(alice)
    finally:
        app.conf.broker_url, app.conf.broker_transport_options = working
    assert sub.status == Submission.Status.QUEUED
    assert set(sub.jobs.values_list("state", flat=True)) == {EvaluationJob.State.PENDING}
    EvaluationJob.objects.filter(submission=sub).update(created_at=timezone.now() - timedelta(seconds=30))
    before = queued_messages(app)
    assert jobs_reap()["dispatched"] == 3
    assert queued_messages(app) == before + 3
    assert runner_api.claim(sub.jobs.first().pk).status_code == 200


def test_an_upload_whose_validation_was_never_enqueued_is_validated_by_the_reaper(alice, _celery_for_tests):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from leaderboard.benchmarks.models import Benchmark
    from leaderboard.submissions.services import submission_create
    from tests.conftest import OPTIMIZER_SOURCE

    sub = submission_create(owner=alice, benchmark=Benchmark.objects.get(slug="opt-synthetic"), name="x",
                            upload=SimpleUploadedFile("x.py", OPTIMIZER_SOURCE))  # on_commit never runs here
    Submission.objects.filter(pk=sub.pk).update(created_at=timezone.now() - timedelta(minutes=1))
    assert jobs_reap()["validations_sent"] == 1  # site tasks run inline here
    sub.refresh_from_db()
    assert sub.status == Submission.Status.QUEUED and sub.jobs.count() == 3


def test_the_reaper_sends_a_stranded_upload_to_validation_and_leaves_reading_its_file_to_the_task(
        alice, _celery_for_tests, monkeypatch):
    """A run of the reaper may find a hundred uploads stranded while the broker was down, each up
    to a gigabyte: it only sends each a message, and the validation task reads and hashes the file."""
    import json

    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.db.models.fields.files import FieldFile

    from leaderboard.benchmarks.models import Benchmark
    from leaderboard.submissions.services import submission_create
    from leaderboard.submissions.tasks import validate_submission
    from tests.conftest import OPTIMIZER_SOURCE

    app = _celery_for_tests
    sub = submission_create(owner=alice, benchmark=Benchmark.objects.get(slug="opt-synthetic"), name="x",
                            upload=SimpleUploadedFile("x.py", OPTIMIZER_SOURCE))  # on_commit never runs here
    Submission.objects.filter(pk=sub.pk).update(created_at=timezone.now() - timedelta(minutes=1))
    opened = []
    real_open = FieldFile.open
    monkeypatch.setattr(FieldFile, "open", lambda self, mode="rb": opened.append(self.name) or real_open(self, mode))
    queue = app.broker_folder / "queue"
    before = set(queue.glob("*.msg"))

    app.conf.task_always_eager = False  # a real message, as in production
    try:
        assert jobs_reap()["validations_sent"] == 1
    finally:
        app.conf.task_always_eager = True
    sub.refresh_from_db()
    assert sub.status == Submission.Status.UPLOADED and opened == []
    sent = set(queue.glob("*.msg")) - before
    messages = [json.loads(path.read_text()) for path in sent]
    for path in sent:
        path.unlink()  # the broker folder outlives this test
    assert [(m["headers"]["task"], m["properties"]["delivery_info"]["routing_key"]) for m in messages] == [
        ("leaderboard.validate_submission", "site")]

    validate_submission(sub.pk)  # what the site's worker runs for that message
    sub.refresh_from_db()
    assert sub.status == Submission.Status.QUEUED and sub.jobs.count() == 3 and opened


def test_a_lost_wake_up_is_sent_again_even_when_a_job_sent_before_it_was_claimed_after_it(
        alice, make_submission, settings, runner_api, runner_node, finish_job):
    """A broker restart loses the messages of jobs 2 and 3 of a submission, while job 1 (sent just
    before them) is claimed just after they were sent. Once the pool has sat idle for a whole
    dispatch timeout, their wake-ups are sent again: nothing waits forever."""
    sub = make_submission(alice)
    first, *lost = list(sub.jobs.select_related("task").order_by("pk"))
    long_ago = timezone.now() - timedelta(seconds=settings.JOB_DISPATCH_TIMEOUT_SECONDS * 3)
    EvaluationJob.objects.filter(pk=first.pk).update(dispatched_at=long_ago - timedelta(seconds=1))
    EvaluationJob.objects.filter(pk__in=[j.pk for j in lost]).update(dispatched_at=long_ago, created_at=long_ago)
    finish_job(runner_api, first)
    EvaluationJob.objects.filter(pk=first.pk).update(claimed_at=long_ago + timedelta(seconds=1),
                                                     finished_at=long_ago + timedelta(seconds=2))
    counts = jobs_reap()
    assert counts["redispatched"] == 2
    assert all(j.dispatches == 2 for j in EvaluationJob.objects.filter(pk__in=[j.pk for j in lost]))
