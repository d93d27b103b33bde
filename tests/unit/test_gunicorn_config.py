"""deploy/gunicorn.conf.py: the one gunicorn configuration the image, the systemd unit and
`make bench-web` run, read by gunicorn itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "gunicorn.conf.py"


def gunicorn_config(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("WEB_CONCURRENCY", "GUNICORN_THREADS")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--print-config",
            "-c",
            str(CONFIG),
            "leaderboard.wsgi:application",
        ],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def settings_of(result: subprocess.CompletedProcess) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return {name.strip(): value.strip() for name, value in pairs}


def test_gunicorn_runs_one_threaded_worker_per_core_up_to_four_unless_told_otherwise():
    result = gunicorn_config()
    assert result.returncode == 0, result.stderr
    found = settings_of(result)
    assert found["workers"] == str(min(len(os.sched_getaffinity(0)), 4))
    assert (found["threads"], found["worker_class"], found["accesslog"]) == ("4", "gthread", "-")
    told = settings_of(gunicorn_config(WEB_CONCURRENCY="3", GUNICORN_THREADS="2"))
    assert (told["workers"], told["threads"]) == ("3", "2")


def test_a_mistaken_number_of_workers_or_threads_stops_gunicorn_naming_the_variable():
    # (WEB_CONCURRENCY=two never reaches the file: gunicorn's own default for workers fails on it)
    for name, value in (("WEB_CONCURRENCY", "0"), ("GUNICORN_THREADS", "two"), ("GUNICORN_THREADS", "-1")):
        result = gunicorn_config(**{name: value})
        assert result.returncode != 0 and f"{name}={value!r}" in result.stderr, (name, value)


def test_the_image_and_the_systemd_unit_run_this_configuration():
    dockerfile = (ROOT / "deploy" / "Dockerfile.site").read_text()
    assert (
        "COPY deploy/gunicorn.conf.py ./deploy/" in dockerfile
        and '"-c", "deploy/gunicorn.conf.py"' in dockerfile
    )
    unit = (ROOT / "deploy" / "systemd" / "leaderboard-web.service").read_text()
    assert "-c /opt/leaderboard/deploy/gunicorn.conf.py" in unit and "--workers" not in unit
