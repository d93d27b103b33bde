"""`runner register`: exchange a one-time registration code for this node's token."""
from __future__ import annotations

import os
from pathlib import Path

import httpx

from runner.client import answer_detail
from runner.spec import API_PREFIX


class RegistrationError(Exception):
    """The site refused the code, or could not be reached; the message says which."""


def default_token_file() -> Path:
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "leaderboard-runner" / "runner.env"


def register(*, server: str, code: str, name: str, token_file: Path | None = None) -> dict:
    """POST the code; write RUNNER_SERVER, RUNNER_TOKEN and RUNNER_POOLS to ``token_file`` (0600)
    so that `runner work` can be started with that environment file. Returns the site's answer."""
    url = server.rstrip("/") + API_PREFIX + "register/"
    try:
        response = httpx.post(url, json={"code": code, "name": name}, timeout=30)
    except httpx.HTTPError as exc:
        raise RegistrationError(f"cannot reach {url}: {exc}") from exc
    if response.status_code != 201:
        raise RegistrationError(f"the site refused the code ({response.status_code}): {answer_detail(response)}")
    body = response.json()
    path = token_file or default_token_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"RUNNER_SERVER={server}\nRUNNER_TOKEN={body['token']}\nRUNNER_POOLS={','.join(body['pools'])}\n")
    return {**body, "token_file": str(path)}
