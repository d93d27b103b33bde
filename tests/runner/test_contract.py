"""What the runner and the site agree on (runner/spec.py), seen from the runner's side."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import runner.sandboxed
from runner.evaluate import local_job_spec
from runner.sandboxed import rules
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


# --------------------------------------------------------------------------------------------
# The programs that run inside the sandbox (runner/sandboxed/) report only user error kinds,
# named through runner/sandboxed/rules.py, and import nothing the sandbox does not hold.
# --------------------------------------------------------------------------------------------
SANDBOXED = Path(runner.sandboxed.__file__).parent
# ... and the runner modules bound beside them (runner.sandboxed.FROM_RUNNER: runner/saliency.py).
PROGRAMS = sorted(p for p in SANDBOXED.glob("*.py") if p.name != "__init__.py") + sorted(
    runner.sandboxed.FROM_RUNNER.values()
)
THIRD_PARTY = {"torch", "numpy", "onnxruntime", "safetensors", "torchvision", "timm"}  # what the sandbox's interpreter holds


def kind_problems(source: str) -> list[str]:
    """Every place in ``source`` where an error kind is given (the first argument or ``kind=`` of
    ChildError, the value of a ``"kind"`` key) whose value is not certain to be a kind
    runner/spec.py counts as the user's: a string that is not one, a ``rules.X`` that rules.py
    lacks or that is not a kind, or an expression this check cannot read."""
    problems: list[str] = []

    def check(node: ast.expr) -> None:
        where = f"line {node.lineno}: {ast.unparse(node)}"
        if isinstance(node, ast.Constant):
            if node.value not in USER_ERROR_KINDS:
                problems.append(f"{where} is not a user error kind")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "rules":
            if getattr(rules, node.attr, None) not in USER_ERROR_KINDS:
                problems.append(f"{where} is not a user error kind in rules.py")
        elif isinstance(node, ast.IfExp):
            check(node.body)
            check(node.orelse)
        elif isinstance(node, ast.Call) and ast.unparse(node.func) == "rules.kind_of_exception":
            pass  # checked below, once, on rules.py itself
        elif isinstance(node, ast.Attribute) and node.attr == "kind":
            pass  # a ChildError's kind, checked where it was raised
        else:
            problems.append(f"{where}: name the kind with a rules.py constant")

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and ast.unparse(node.func) in ("ChildError", "rules.ChildError"):
            if node.args:
                check(node.args[0])
            for keyword in node.keywords:
                if keyword.arg == "kind":
                    check(keyword.value)
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "kind":
                    check(value)
    return problems


def test_the_kind_check_finds_a_misspelt_kind_wherever_a_program_names_one():
    assert kind_problems('raise ChildError("invalid_artifcat", "no make_optimizer")')
    assert kind_problems('send({"op": "error", "kind": "runtime_eror", "message": m})')
    assert kind_problems("raise ChildError(rules.INVALID_ARTIFCAT, 'no make_optimizer')")
    assert kind_problems('send({"kind": rules.OUT_OF_MEMORY if oom else "runtime_eror"})')
    assert kind_problems("raise ChildError(rules.TIMEOUT_AFTER, 'slow')")
    assert kind_problems("raise ChildError(kind, 'from a variable nobody checks')")
    assert not kind_problems('raise ChildError(rules.NOT_FINITE, "NaN")\nsend({"kind": "wrong_output"})')


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.name)
def test_each_sandboxed_program_reports_only_user_error_kinds(program):
    assert kind_problems(program.read_text()) == []


def test_the_kinds_in_rules_are_runner_spec_user_error_kinds_under_the_same_names():
    named = {name: value for name, value in vars(rules).items() if name.isupper() and isinstance(value, str)}
    assert rules.REPORTABLE_KINDS <= USER_ERROR_KINDS
    assert set(named.values()) == set(rules.REPORTABLE_KINDS)
    for name, value in named.items():
        assert getattr(ErrorKind, name) == value, name
    failures = [MemoryError(), RuntimeError("can't start new thread"), PermissionError(13, "no"), OSError(30, "ro"),
                ValueError("its own bug"), RuntimeError("CUDA out of memory")]
    assert {rules.kind_of_exception(exc) for exc in failures} <= rules.REPORTABLE_KINDS


def test_a_program_cannot_raise_a_kind_only_the_platform_may_report():
    with pytest.raises(ValueError):
        rules.ChildError(ErrorKind.RUNNER_ERROR, "not my fault")
    with pytest.raises(ValueError):
        rules.ChildError("invalid_artifcat", "a typo")


def imports_of(path: Path) -> set[str]:
    """The modules ``path`` imports, ``runner.sandboxed.X`` for a companion the runner's view names."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            companions = node.module in ("runner.sandboxed", "runner")  # runner: a FROM_RUNNER module
            imported |= {f"{node.module}.{alias.name}" for alias in node.names} if companions else {node.module}
    return imported


def bound_with(name: str) -> list[set[str]]:
    """The sets of files bound into one sandbox whenever ``name`` is (runner.sandboxed.BESIDE)."""
    return [{program, *companions} for program, companions in runner.sandboxed.BESIDE.items()
            if name == program or name in companions]


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.name)
def test_each_sandboxed_file_imports_only_the_standard_library_torch_and_what_is_bound_beside_it(program):
    siblings = {p.stem for p in PROGRAMS}
    needs, others = set(), set()
    for module in imports_of(program):
        top = module.split(".")[0]
        if module.startswith("runner.sandboxed."):
            needs.add(module.removeprefix("runner.sandboxed."))  # the runner's import of a companion
        elif module.startswith("runner.") and f"{module.removeprefix('runner.')}.py" in runner.sandboxed.FROM_RUNNER:
            needs.add(module.removeprefix("runner."))
        elif top in siblings:
            needs.add(top)
        elif top not in sys.stdlib_module_names and top not in THIRD_PARTY:
            others.add(module)
    assert others == set(), f"{program.name} imports what the sandbox does not hold"
    assert bound_with(program.name), f"{program.name} is never bound into a sandbox"
    for bound in bound_with(program.name):
        assert needs <= {Path(name).stem for name in bound}, (program.name, bound)


def test_stage_copies_a_program_and_exactly_its_companions_readable_by_the_sandbox(tmp_path):
    for program, companions in runner.sandboxed.BESIDE.items():
        folder = tmp_path / program
        folder.mkdir()
        staged = runner.sandboxed.stage(program, folder)
        assert staged == folder / program
        assert sorted(p.name for p in folder.iterdir()) == sorted([program, *companions])
        assert all(p.stat().st_mode & 0o777 == 0o644 for p in folder.iterdir())


def test_no_sandboxed_program_keeps_its_own_out_of_memory_or_error_kind_rules():
    """One rule, one place: out of memory, process limits and the kinds live in rules.py only."""
    own = {"is_out_of_memory", "kind_of_exception", "hit_process_limit", "MEMORY_MESSAGES", "INVALID_ARTIFACT",
           "RUNTIME_ERROR", "OUT_OF_MEMORY", "NOT_FINITE", "WRONG_OUTPUT", "BAD_HPARAMS", "SANDBOX_VIOLATION"}
    for program in PROGRAMS:
        if program.name == "rules.py":
            continue
        tree = ast.parse(program.read_text())
        defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        defined |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
                    and not (isinstance(n.value, ast.Attribute) and ast.unparse(n.value).startswith("rules."))}
        assert not defined & own, (program.name, defined & own)


def test_an_evaluation_error_only_takes_a_known_kind():
    with pytest.raises(ValueError):
        EvaluationError("it_broke", "no such kind")
