"""The `runner` command as an operator or a researcher types it."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import runner
from runner import datasets

from . import sources

RUNNER = str(Path(sys.executable).parent / "runner")


def runner_command(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([RUNNER, *args], cwd=cwd, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "COLUMNS": "120", **(env or {})})


@pytest.mark.usefixtures("bwrap")
def test_runner_run_evaluates_a_file_locally_prints_the_metrics_and_writes_the_result(tmp_path, write_submission):
    path = write_submission(sources.SGD)
    hparams = tmp_path / "hparams.json"
    hparams.write_text('{"lr": 0.1}')
    done = runner_command("run", "--task", "opt-f1", "--artifact", str(path), "--hparams", str(hparams),
                          "--out", str(tmp_path / "result.json"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "final_loss" in done.stdout and "min_loss" in done.stdout and "sandbox: bwrap" in done.stdout
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["task"] == "opt-f1" and result["metrics"]["final_x"] == pytest.approx(-0.3, abs=1e-6)


@pytest.mark.usefixtures("bwrap")
def test_runner_run_on_a_broken_file_exits_non_zero_with_the_error_kind(tmp_path, write_submission):
    path = write_submission(sources.SYNTAX_ERROR)
    done = runner_command("run", "--task", "opt-f2", "--artifact", str(path), "--hparams", '{"lr": 0.1}', cwd=tmp_path)
    assert done.returncode == 1
    assert "invalid_artifact" in done.stderr and "syntax error at line 4" in done.stderr
    assert not (tmp_path / "result-opt-f2.json").exists()


def test_runner_run_names_an_unknown_task(tmp_path, write_submission):
    done = runner_command("run", "--task", "opt-f9", "--artifact", str(write_submission(sources.SGD)), cwd=tmp_path)
    assert done.returncode == 2 and "unknown task 'opt-f9'" in done.stderr


@pytest.mark.parametrize(("params", "said"), [
    ('{"stepz": 50}', "opt-f1 has no parameter 'stepz'; its parameters: function, max_evaluations, steps, x0"),
    ('{"steps": "fifty"}', "opt-f1's parameter 'steps' is an integer (the catalogue's: 300), not \"fifty\""),
    ('{"steps": 5.5}', "opt-f1's parameter 'steps' is an integer (the catalogue's: 300), not 5.5"),
    ('{"x0": true}', "opt-f1's parameter 'x0' is a number (the catalogue's: -1.0), not true"),
    ("[50]", "task parameters must be a JSON object"),
])
def test_runner_run_refuses_task_params_the_task_lacks_or_of_another_type_before_running(
        tmp_path, write_submission, params, said):
    """A typo in --params would otherwise run the whole catalogue budget (hours on a training task)."""
    done = runner_command("run", "--task", "opt-f1", "--artifact", str(write_submission(sources.SGD)),
                          "--params", params, cwd=tmp_path, env={"COLUMNS": "400"})
    assert done.returncode == 2, done.stdout
    assert "Invalid value for --params" in done.stderr and said in done.stderr, done.stderr
    assert not list(tmp_path.glob("result-*.json"))


def test_runner_run_takes_an_integer_where_the_catalogue_has_a_number(tmp_path, write_submission):
    from runner.evaluate import LocalRun
    spec = LocalRun(["opt-f1"], write_submission(sources.SGD), params={"x0": 2, "steps": 10}).job_spec("opt-f1")
    assert spec.task.params == {"function": "f1", "x0": 2, "steps": 10}
    # what a track reads beyond the catalogue's (the claims' budget sets opt-digits' split; seeds as a list)
    params = {"epochs": 2, "seeds": [3, 4], "split_seed": 0, "test_fraction": 0.25, "precision": "float32"}
    spec = LocalRun(["opt-digits"], write_submission(sources.SGD), params=params).job_spec("opt-digits")
    assert spec.task.params == {"batch_size": 64, "target_top1": 95.0, **params}


@pytest.mark.usefixtures("bwrap")
def test_runner_check_reports_torch_the_sandbox_and_the_datasets(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    done = runner_command("check", cwd=tmp_path, env={"RUNNER_DATA": str(data), "COLUMNS": "250"})
    assert done.returncode == 0, done.stdout + done.stderr
    torch_row = next(line for line in done.stdout.splitlines() if " torch " in line)
    assert metadata.version("torch") in torch_row, torch_row  # the installed torch, whichever it is
    assert "sandbox" in done.stdout and "available: bubblewrap sandbox works" in done.stdout
    assert str(data) in done.stdout and "opt-f1, opt-f2, opt-f3" in done.stdout
    assert (", ".join(datasets.present(data)) or "none") in done.stdout


def test_runner_work_refuses_to_start_without_a_sandbox_unless_trusted(tmp_path):
    done = runner_command("work", "--server", "http://127.0.0.1:9", "--token", "t", cwd=tmp_path,
                          env={"RUNNER_BWRAP": str(tmp_path / "no-bwrap")})
    assert done.returncode == 2 and "sandbox is unavailable" in done.stderr


def test_the_runner_never_imports_django_even_with_django_settings_in_the_environment(tmp_path):
    for source in Path(runner.__file__).parent.rglob("*.py"):
        tree = ast.parse(source.read_text())
        modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        modules |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not {m for m in modules if m.split(".")[0] == "django"}, source
    # Celery's Django fix-up would load django.conf when DJANGO_SETTINGS_MODULE is set; the runner's
    # app turns it off. (kombu probes django.utils.functional wherever Django happens to be installed.)
    code = ("import sys\n"
            "import runner.cli, runner.worker, runner.evaluate, runner.client, runner.sandbox, runner.sandboxed.training\n"
            "import runner.tracks.optimize, runner.nodeinfo\n"
            "runner.worker.app.loader\n"
            "print('django.conf' in sys.modules, 'django.apps' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DJANGO_SETTINGS_MODULE": "leaderboard.settings"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False False"
