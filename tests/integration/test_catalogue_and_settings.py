from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

from leaderboard.benchmarks.models import Benchmark, Task

ROOT = Path(__file__).resolve().parents[2]


def production_env(tmp_path, **overrides) -> dict:
    """This process's environment minus test-only switches (the browser tests lift Django's
    async guard for their session), plus production variables."""
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_ALLOW_ASYNC_UNSAFE", "SECRET_KEY")}
    env.update({"DEBUG": "0", "LEADERBOARD_VAR": str(tmp_path)}, **overrides)
    return env


@pytest.mark.django_db
def test_loading_the_catalogue_twice_changes_nothing():
    before = (Benchmark.objects.count(), Task.objects.count(), list(Task.objects.values_list("pk", flat=True)))
    call_command("loadbenchmarks")
    call_command("loadbenchmarks")
    after = (Benchmark.objects.count(), Task.objects.count(), list(Task.objects.values_list("pk", flat=True)))
    assert before == after and before[1] == 54
    imagenet_c = Task.objects.get(slug="imagenet-c")
    assert (imagenet_c.primary_metric, imagenet_c.higher_is_better) == ("mce", False)


@pytest.mark.django_db
def test_a_database_migrated_before_the_transformer_workload_gets_it_from_migration_0004():
    import importlib

    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    name = "0004_load_opt_text_transformer"
    state = MigrationExecutor(connection).loader.project_state(("benchmarks", name))
    Task.objects.filter(slug="opt-text-transformer").delete()
    Benchmark.objects.filter(slug="opt-text-transformer").delete()
    importlib.import_module(f"leaderboard.benchmarks.migrations.{name}").load(state.apps, None)
    task = Task.objects.get(slug="opt-text-transformer")
    assert (task.primary_metric, task.higher_is_better, task.queue) == ("val_bpb_mean", False, "runner.cpu")
    assert task.benchmark.slug == "opt-text-transformer" and task.benchmark.kind == "optimizer"
    assert task.params["steps"] == 800 and task.dataset == "pydoc-topics"


def test_check_deploy_passes_with_production_variables(tmp_path):
    env = production_env(tmp_path, SECRET_KEY="x" * 64 + "-production-secret-0123456789",
                         ALLOWED_HOSTS="leaderboard.example.org", SECURE_SSL_REDIRECT="1",
                         SECURE_HSTS_SECONDS="31536000")
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_deploy_flags_the_embedded_secret_key(tmp_path):
    env = production_env(tmp_path, ALLOWED_HOSTS="x.org")
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "SECRET_KEY" in result.stdout + result.stderr
