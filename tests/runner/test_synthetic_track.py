"""The optimizer track on the diffGrad synthetic functions, end to end through evaluate(): the
numbers a researcher gets, and the error a broken submission gets instead."""
from __future__ import annotations

import numpy as np
import pytest

from runner.evaluate import evaluate, local_job_spec
from runner.spec import ErrorKind, EvaluationError, validate_result

from . import sources

pytestmark = pytest.mark.usefixtures("bwrap")
f32 = np.float32


def hand_gradient(function: str, x: np.float32) -> np.float32:
    """dF/dx written out by hand, in float32, branch conditions compared in float32."""
    if function == "f1":
        return f32(2) * (x + f32(0.3)) if x <= f32(0) else f32(2) * (x - f32(0.2))
    if function == "f2":
        if x <= f32(-0.9):
            return f32(-40)
        return f32(3) * x * x + np.sin(f32(8) * x) + f32(8) * x * np.cos(f32(8) * x)
    for bound, slope in ((-0.5, None), (-0.4, 1.0), (0.0, -7 / 8), (0.4, 7 / 8), (0.5, -1.0)):
        if x <= f32(bound):
            return f32(2) * x if slope is None else f32(slope)
    return f32(2) * x


def hand_loss(function: str, x: np.float32) -> np.float32:
    if function == "f1":
        return (x + f32(0.3)) ** 2 if x <= f32(0) else (x - f32(0.2)) ** 2 + f32(0.05)
    if function == "f2":
        return f32(-40) * x - f32(35.15) if x <= f32(-0.9) else x ** 3 + x * np.sin(f32(8) * x) + f32(0.85)
    if x <= f32(-0.5):
        return x * x
    if x <= f32(-0.4):
        return f32(0.75) + x
    if x <= f32(0):
        return f32(-7) * x / f32(8)
    if x <= f32(0.4):
        return f32(7) * x / f32(8)
    if x <= f32(0.5):
        return f32(0.75) - x
    return x * x


def hand_sgd(function: str, lr: float, x0: float = -1.0, steps: int = 300) -> list[np.float32]:
    x, xs = f32(x0), [f32(x0)]
    for _ in range(steps):
        x = f32(x - f32(lr) * hand_gradient(function, x))
        xs.append(x)
    return xs


def run_task(task: str, path, hparams: dict) -> dict:
    return evaluate(local_job_spec(task, path, hparams), path, data_root="/nonexistent")


def failure(task: str, path, hparams: dict | None = None) -> EvaluationError:
    with pytest.raises(EvaluationError) as caught:
        run_task(task, path, hparams or {})
    return caught.value


# F2's slope of -40 left of -0.9 throws plain SGD at lr 0.1 far away, where float32 rounding of
# the derivative decides the path; at lr 0.01 it walks into the valley.
@pytest.mark.parametrize("task, lr", [("opt-f1", 0.1), ("opt-f2", 0.01), ("opt-f3", 0.1)])
def test_plain_sgd_scores_what_a_hand_computed_float32_run_gives(task, lr, write_submission):
    result = run_task(task, write_submission(sources.SGD), {"lr": lr})
    function = task.removeprefix("opt-")
    expected_x = hand_sgd(function, lr)
    expected_loss = [hand_loss(function, x) for x in expected_x]

    validate_result(result, task)
    trajectory = result["curves"]["trajectory"]
    assert trajectory["step"] == list(range(301))
    np.testing.assert_allclose(trajectory["x"], np.array(expected_x, dtype=np.float64), rtol=1e-6, atol=1e-6)
    metrics = result["metrics"]
    assert metrics["final_x"] == trajectory["x"][-1]
    np.testing.assert_allclose(metrics["final_x"], float(expected_x[-1]), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(metrics["final_loss"], float(expected_loss[-1]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["min_loss"], float(min(expected_loss)), rtol=1e-5, atol=1e-6)
    assert result["env"]["sandbox"] == "bwrap" and result["env"]["seeds"] == [0]
    assert result["env"]["dtype"] == "float32"
    timing = result["timing"]  # the throughput is the steps taken over the wall time they took
    assert timing["items_per_s"] == pytest.approx(result["env"]["steps"] / timing["wall_s"], rel=1e-2)
    if task == "opt-f1":  # from -1, plain SGD settles in F1's left (global) minimum
        assert metrics["final_x"] == pytest.approx(-0.3, abs=1e-6)


def test_the_same_submission_and_seed_give_identical_metrics(write_submission):
    path = write_submission(sources.NOISY_SGD)
    first = run_task("opt-f3", path, {"lr": 0.05, "noise": 0.05})
    second = run_task("opt-f3", path, {"lr": 0.05, "noise": 0.05})
    assert first["metrics"] == second["metrics"]
    assert first["curves"] == second["curves"]
    noiseless = [float(x) for x in hand_sgd("f3", 0.05)]
    assert first["curves"]["trajectory"]["x"] != pytest.approx(noiseless)  # the noise is real, and seeded


def test_a_syntax_error_is_an_invalid_artifact_naming_the_line(write_submission):
    error = failure("opt-f1", write_submission(sources.SYNTAX_ERROR))
    assert error.kind == ErrorKind.INVALID_ARTIFACT
    assert "syntax error at line 4" in error.message


def test_a_file_without_make_optimizer_is_an_invalid_artifact_saying_what_to_add(write_submission):
    error = failure("opt-f1", write_submission(sources.NO_ENTRY_POINT), {"lr": 0.1})
    assert error.kind == ErrorKind.INVALID_ARTIFACT
    assert "def make_optimizer(params, **hparams)" in error.message


def test_hyperparameters_that_do_not_fit_make_optimizer_name_the_accepted_ones(write_submission):
    error = failure("opt-f1", write_submission(sources.SGD), {"lr": 0.1, "betas": [0.9, 0.99]})
    assert error.kind == ErrorKind.BAD_HPARAMS
    assert "betas" in error.message and "It accepts: lr, momentum." in error.message


def test_a_hyperparameter_value_the_optimizer_rejects_is_bad_hparams(write_submission):
    error = failure("opt-f1", write_submission(sources.SGD), {"lr": -1.0})
    assert error.kind == ErrorKind.BAD_HPARAMS
    assert "Invalid learning rate" in error.message


def test_make_optimizer_returning_something_else_is_an_invalid_artifact(write_submission):
    error = failure("opt-f1", write_submission(sources.NOT_AN_OPTIMIZER), {"lr": 0.1})
    assert error.kind == ErrorKind.INVALID_ARTIFACT
    assert "returned list, not a torch.optim.Optimizer" in error.message


def test_an_exception_in_step_is_a_runtime_error_with_the_exception_and_the_step(write_submission):
    error = failure("opt-f1", write_submission(sources.RAISES_IN_STEP), {"lr": 0.1})
    assert error.kind == ErrorKind.RUNTIME_ERROR
    assert "optimizer.step() at step 1" in error.message and "ZeroDivisionError: division by zero" in error.message
    assert "line 6 in step" in error.message


def test_a_parameter_that_becomes_nan_is_not_finite_at_that_step(write_submission):
    error = failure("opt-f2", write_submission(sources.GOES_TO_NAN), {"lr": 0.01})
    assert error.kind == ErrorKind.NOT_FINITE
    assert "x became nan at step 5" in error.message


def test_an_optimizer_that_phones_home_is_a_sandbox_violation(write_submission):
    error = failure("opt-f1", write_submission(sources.PHONES_HOME), {"lr": 0.1})
    assert error.kind == ErrorKind.SANDBOX_VIOLATION
    assert "Network is unreachable" in error.message


def test_a_submission_cannot_pass_its_failure_off_as_the_platforms(write_submission):
    error = failure("opt-f1", write_submission(sources.FAKES_AN_INFRASTRUCTURE_ERROR))
    assert error.kind == ErrorKind.RUNTIME_ERROR
