"""What the runner and the site agree on (runner/spec.py), seen from the runner's side."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import runner.child
from runner.evaluate import local_job_spec
from runner.spec import (
    USER_ERROR_KINDS,
    ErrorKind,
    EvaluationError,
    JobSpec,
    SpecError,
    make_result,
    validate_result,
)

from . import sources


def synthetic_result(**metrics) -> dict:
    values = {"final_x": -0.3, "final_loss": 0.0, "min_loss": 0.0, **metrics}
    return make_result("opt-f1", values, curves={"trajectory": {"step": [0, 1], "x": [-1.0, -0.3], "loss": [0.49, 0]}},
                       env={"sandbox": "bwrap"}, timing={"wall_s": 1.0})


def test_a_synthetic_result_with_every_required_key_validates():
    assert validate_result(synthetic_result(), "opt-f1")["metrics"]["final_x"] == -0.3


@pytest.mark.parametrize("breakage, complaint", [
    (lambda d: d["metrics"].pop("min_loss"), "lacks min_loss"),
    (lambda d: d["metrics"].update(final_loss=float("nan")), "not a finite number"),
    (lambda d: d["curves"].pop("trajectory"), "lacks trajectory"),
    (lambda d: d.update(task="opt-f2"), "not 'opt-f1'"),
    (lambda d: d.update(schema=2), "schema"),
])
def test_a_result_that_breaks_the_contract_is_refused_with_the_reason(breakage, complaint):
    doc = synthetic_result()
    breakage(doc)
    with pytest.raises(SpecError, match=complaint):
        validate_result(doc, "opt-f1")


def test_a_job_spec_survives_the_round_trip_through_json(tmp_path):
    path = tmp_path / "opt.py"
    path.write_bytes(sources.SGD)
    spec = local_job_spec("opt-f3", path, {"lr": 0.1})
    again = JobSpec.from_dict(spec.to_dict())
    assert again == spec
    assert again.task.params == {"function": "f3", "x0": -1.0, "steps": 300}
    assert again.submission.artifact_format == "python" and again.submission.artifact_size == len(sources.SGD)


def test_a_job_spec_from_a_newer_site_is_refused():
    doc = {"schema": 99, "job_id": 1, "attempt": 1, "task": {}, "submission": {}}
    with pytest.raises(SpecError, match="this runner speaks 1"):
        JobSpec.from_dict(doc)


def test_the_child_reports_only_user_error_kinds():
    kinds = {value for name, value in vars(runner.child).items() if name.isupper() and isinstance(value, str)
             and value in {getattr(ErrorKind, k) for k in dir(ErrorKind) if k.isupper()}}
    assert kinds and kinds <= USER_ERROR_KINDS


def test_the_child_program_is_self_contained_standard_library_and_torch_only():
    tree = ast.parse(Path(runner.child.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported - set(sys.stdlib_module_names) <= {"torch"}


def test_an_evaluation_error_only_takes_a_known_kind():
    with pytest.raises(ValueError):
        EvaluationError("it_broke", "no such kind")
