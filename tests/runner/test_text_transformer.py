"""The transformer workload ``opt-text-transformer`` (docs/submissions.md, "Optimizers"): the
runner's learning-rate schedule reaches the sandboxed optimizer through the optimizer server's
``lr_scale`` (runner/opt_server.py, runner/sandboxed/optimizer_server.py)."""
from __future__ import annotations

import pytest
import torch

from runner.opt_server import OptimizerServer
from runner.spec import ErrorKind, EvaluationError

# Writes each group's lr, as the step sees it, into that group's parameter.
RECORDS_LR = b'''import torch


class Records(torch.optim.Optimizer):
    def __init__(self, params, lr):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.fill_(float(group["lr"]))


def make_optimizer(params, lr=0.1):
    first, second = params
    return Records([{"params": [first]}, {"params": [second], "lr": 3 * lr}], lr=lr)
'''

NO_LR = b'''import torch


class NoLr(torch.optim.Optimizer):
    def __init__(self, params):
        super().__init__(params, {})
        self.wants_first_layer_stats = True

    def step(self, closure=None):
        return None


def make_optimizer(params):
    return NoLr(params)
'''


def serve(tmp_path, source: bytes, hparams: dict) -> OptimizerServer:
    path = tmp_path / "uploads" / "opt.py"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(source)
    server = OptimizerServer(path, hparams, work_dir=tmp_path / "work", time_limit_s=60, memory_bytes=8 << 30,
                             trust=False)
    (tmp_path / "work").mkdir()
    server.start([(1,), (1,)])
    return server


@pytest.mark.usefixtures("bwrap")
def test_lr_scale_sets_each_groups_lr_to_its_own_base_times_the_scale_before_the_step(tmp_path):
    with serve(tmp_path, RECORDS_LR, {"lr": 0.02}) as server:
        seen = []
        for step, scale in enumerate([0.5, 0.0, 1.0, 0.25], start=1):
            assert server.step(step, lambda: 0.0, evaluations_left=lambda: True, lr_scale=scale)
            seen.append([float(v) for values in server.shared.values for v in values])
        assert server.step(5, lambda: 0.0, evaluations_left=lambda: True)  # no scale: the last lr stays
        seen.append([float(v) for values in server.shared.values for v in values])
    expected = [[0.02 * s, 0.06 * s] for s in (0.5, 0.0, 1.0, 0.25, 0.25)]
    assert torch.equal(torch.tensor(seen), torch.tensor(expected, dtype=torch.float32))  # the float32 parameters


@pytest.mark.usefixtures("bwrap")
def test_a_group_without_an_lr_is_the_submissions_invalid_artifact_only_where_the_runner_schedules_it(tmp_path):
    with serve(tmp_path, NO_LR, {}) as server:
        assert server.wants == {"first_layer_stats"} and server.hooks == set()  # asked for, not offered
        assert server.step(1, lambda: 0.0, evaluations_left=lambda: True)  # no schedule: fine
        with pytest.raises(EvaluationError) as caught:
            server.step(2, lambda: 0.0, evaluations_left=lambda: True, lr_scale=0.5)
    assert caught.value.kind == ErrorKind.INVALID_ARTIFACT
    assert "param group 0" in caught.value.message and "numeric lr" in caught.value.message


def test_the_runner_refuses_to_send_a_scale_that_is_not_finite_and_non_negative():
    server = OptimizerServer(__file__, {}, work_dir=".", time_limit_s=1, memory_bytes=1, trust=False)
    for bad in (float("nan"), float("inf"), -0.1):
        with pytest.raises(ValueError, match="lr_scale"):
            server.step(1, lambda: 0.0, evaluations_left=lambda: True, lr_scale=bad)
