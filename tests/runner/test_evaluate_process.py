"""One kind of process for both paths: runner.evaluate runs a track under the rules of the Celery
prefork child that `runner work` evaluates in (a daemonic process, which may not start
multiprocessing children), so code that would only break on a worker breaks in `runner run` and
in every in-process test as well."""
from __future__ import annotations

import multiprocessing
import threading

import pytest

from runner import evaluate as evaluate_module
from runner.evaluate import evaluate, local_job_spec, worker_process_rules


def _nothing() -> None:
    """A child that does nothing: only starting it matters."""


def start_a_process_pool_child(spec, artifact_path, **_):
    """A track that reaches for a multiprocessing child, as the JPEG decoder once did."""
    child = multiprocessing.get_context("spawn").Process(target=_nothing)
    child.start()
    child.join()
    return {"schema": 1, "task": spec.task.slug, "metrics": {"final_loss": 0.0}}


@pytest.fixture
def track_that_forks(monkeypatch):
    monkeypatch.setattr(evaluate_module, "_track", lambda slug: start_a_process_pool_child)


def test_a_track_that_starts_a_multiprocessing_child_fails_in_runner_run_as_it_does_in_runner_work(
        track_that_forks, write_submission, tmp_path):
    artifact = write_submission(b"def make_optimizer(params):\n    return None\n")
    spec = local_job_spec("opt-f1", artifact)
    with pytest.raises(AssertionError, match="daemonic processes are not allowed to have children"):
        evaluate(spec, artifact, data_root=tmp_path)
    assert multiprocessing.current_process().daemon is False  # after a failure too, the test process is itself again


def test_the_daemonic_rule_holds_until_the_last_of_two_concurrent_evaluations_ends():
    first_in, second_done = threading.Event(), threading.Event()
    seen: list[bool] = []

    def first() -> None:
        with worker_process_rules():
            first_in.set()
            second_done.wait(10)
            seen.append(multiprocessing.current_process().daemon)

    thread = threading.Thread(target=first)
    thread.start()
    first_in.wait(10)
    with worker_process_rules():
        assert multiprocessing.current_process().daemon is True
    second_done.set()
    thread.join(10)
    assert seen == [True]
    assert multiprocessing.current_process().daemon is False

