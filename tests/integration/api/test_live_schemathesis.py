"""The schemathesis command line against the site served over HTTP, as an API client meets it: all
checks, its coverage, fuzzing and stateful phases, a user's token. It must find nothing.

The server is pytest-django's live server (a real HTTP server in a thread of this process, on a
free port, over the test database) with DEBUG on, as `make demo` runs it: Django then answers an
unknown path with its HTML debug page unless the API says otherwise. The run is bounded
(``--max-examples``, a fixed seed unless SCHEMATHESIS_SEED is set) to stay under two minutes on
two cores; schemathesis.toml beside this file holds its one documented exception."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from leaderboard.accounts.models import ApiToken

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG = Path(__file__).with_name("schemathesis.toml")
CLI = Path(sys.executable).with_name("schemathesis")
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "25"))
SEED = os.environ.get("SCHEMATHESIS_SEED", "20261130")


def test_schemathesis_finds_no_failure_against_the_live_site(live_server, catalogue, alice, settings, tmp_path):
    settings.DEBUG = True
    token = ApiToken.issue(user=alice, name="schemathesis")[1]
    command = [
        str(CLI), "--config-file", str(CONFIG), "run", f"{live_server.url}/api/v1/schema/",
        "--checks", "all", "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", str(MAX_EXAMPLES), "--seed", SEED, "--workers", "1",
        "--request-timeout", "30", "-H", f"Authorization: Token {token}", "--no-color",
    ]
    # its own folder: schemathesis keeps a failure database in the working directory
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-12000:]
    assert "Stateful" in report and "Fuzzing" in report and "Coverage" in report, report[-3000:]
