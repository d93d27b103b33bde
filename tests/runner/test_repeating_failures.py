"""What the runner tells the site about a failure that would recur on every task of the submission
(runner/spec.py failure_repeats): an optimizer whose step the task cannot call, a package the
sandbox lacks; and that a failure depending on the task's data is never marked so, whatever the
child says."""
from __future__ import annotations

import types

import pytest
import torch

from runner.sandboxed import optimizer_loader as child
from runner.spec import ErrorKind
from runner.untrusted import reported_error
from runner.worker import process_job

from . import sources

LBFGS = b'''import torch


def make_optimizer(params, lr=1.0):
    return torch.optim.LBFGS(params, lr=lr)
'''

IMPORTS_A_MISSING_PACKAGE = b'''import torch
from adabelief_pytorch import AdaBelief


def make_optimizer(params, lr=1e-3):
    return AdaBelief(params, lr=lr)
'''

RAISES_AT_IMPORT = b'''import torch

raise RuntimeError("no GPU here")


def make_optimizer(params, lr=0.1):
    return torch.optim.SGD(params, lr=lr)
'''

STEP_WANTS_TWO_ARGUMENTS = b'''import torch


class NeedsTwo(torch.optim.SGD):
    def step(self, loss, scale):
        return super().step()


def make_optimizer(params, lr=0.1):
    return NeedsTwo(params, lr=lr)
'''


def reported_failure(site, client, tmp_path, job_id: int, source: bytes, hparams: dict | None = None) -> dict:
    job = site.add_job(job_id, "opt-f1", source, hparams or {})
    assert process_job(job_id, client, data_root=tmp_path) == "failed"
    assert job.results == [] and len(job.failures) == 1
    return job.failures[0]


def submitted_module(source: bytes) -> types.ModuleType:
    module = types.ModuleType("submission")
    exec(compile(source.decode(), "my_optimizer.py", "exec"), module.__dict__)
    return module


def test_on_a_training_task_an_lbfgs_optimizer_fails_in_one_line_saying_its_step_needs_a_closure():
    """The training tasks' loop on CUDA (runner/sandboxed/training.py, loading the optimizer with
    runner/sandboxed/optimizer_loader.py) calls step() without arguments; the runner's own loop
    gives LBFGS its closure (runner/sandboxed/optimizer_server.py)."""
    with pytest.raises(child.ChildError) as caught:
        child.make_user_optimizer(submitted_module(LBFGS), [torch.zeros(1, requires_grad=True)], {"lr": 1.0},
                                  "my_optimizer.py")
    error = caught.value
    assert error.kind == ErrorKind.INVALID_ARTIFACT and error.repeats is True
    assert error.message == ("LBFGS.step needs a closure (step(closure) re-evaluates the loss), which this task does "
                             "not provide yet: it calls optimizer.step() with no arguments; return an optimizer "
                             "whose step works without one")
    assert error.doc() == {"kind": "invalid_artifact", "message": error.message, "repeats": True}


def test_on_a_training_task_a_step_that_needs_another_argument_names_it():
    with pytest.raises(child.ChildError) as caught:
        child.make_user_optimizer(submitted_module(STEP_WANTS_TWO_ARGUMENTS), [torch.zeros(1, requires_grad=True)],
                                  {}, "my_optimizer.py")
    assert caught.value.kind == ErrorKind.INVALID_ARTIFACT and caught.value.repeats is True
    assert caught.value.message == ("NeedsTwo.step(loss, scale) cannot be called as step(), which is how this task "
                                    "calls it: give loss, scale a default")


@pytest.mark.usefixtures("bwrap")
def test_a_step_the_task_cannot_call_is_reported_in_one_line_as_failing_every_task(site, client, tmp_path):
    failure = reported_failure(site, client, tmp_path, 62, STEP_WANTS_TWO_ARGUMENTS, {"lr": 0.1})
    assert failure["kind"] == ErrorKind.INVALID_ARTIFACT and failure["repeats"] is True
    assert failure["message"].startswith("NeedsTwo.step(loss, scale) cannot be called as step()")
    assert "\n" not in failure["message"]


@pytest.mark.usefixtures("bwrap")
def test_a_package_the_sandbox_lacks_is_reported_in_one_line_as_failing_every_task(site, client, tmp_path):
    failure = reported_failure(site, client, tmp_path, 63, IMPORTS_A_MISSING_PACKAGE, {"lr": 1e-3})
    assert failure["kind"] == ErrorKind.RUNTIME_ERROR and failure["repeats"] is True
    assert failure["message"] == ("importing the submission raised ModuleNotFoundError: No module named "
                                  "'adabelief_pytorch' (line 2 in <module>)")


@pytest.mark.usefixtures("bwrap")
@pytest.mark.parametrize("source, kind", [
    (sources.GOES_TO_NAN, ErrorKind.NOT_FINITE),  # the step it happens at depends on the function
    (sources.RAISES_IN_STEP, ErrorKind.RUNTIME_ERROR),
    (RAISES_AT_IMPORT, ErrorKind.RUNTIME_ERROR),  # may depend on the machine, unlike a missing package
])
def test_a_failure_that_may_not_recur_on_the_other_tasks_is_not_marked_as_repeating(
        site, client, tmp_path, source, kind):
    failure = reported_failure(site, client, tmp_path, 64, source, {"lr": 0.01})
    assert failure["kind"] == kind and failure["repeats"] is False


@pytest.mark.parametrize("kind, claimed, repeats", [
    (ErrorKind.NOT_FINITE, True, False),
    (ErrorKind.TIMEOUT, True, False),
    (ErrorKind.RUNTIME_ERROR, True, True),
    (ErrorKind.RUNTIME_ERROR, False, False),
    (ErrorKind.INVALID_ARTIFACT, False, True),
    ("runner_error", True, False),  # becomes runtime_error, not marked
])
def test_a_child_can_mark_only_a_kind_that_can_repeat_as_repeating(kind, claimed, repeats):
    error = reported_error({"kind": kind, "message": "it broke", "repeats": claimed}, what="the output")
    assert error.repeats is repeats


def test_a_repeats_mark_that_is_not_a_boolean_is_tampering():
    error = reported_error({"kind": "runtime_error", "message": "it broke", "repeats": "yes"}, what="the output")
    assert error.kind == ErrorKind.WRONG_OUTPUT and error.repeats is False
