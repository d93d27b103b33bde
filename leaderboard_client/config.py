"""The saved login: the site's URL and an API token, in a file only its owner can read.

The file is ``credentials.json`` in the user's configuration folder (typer's ``get_app_dir``:
``$XDG_CONFIG_HOME/leaderboard`` or ``~/.config/leaderboard`` on Linux, the platform's own folder
elsewhere), written with mode 0600 (POSIX; on Windows the profile folder's ACL guards it).
``LEADERBOARD_SERVER`` and ``LEADERBOARD_TOKEN`` in the environment take precedence over it (for
CI, where nobody logs in)."""
from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import typer

SERVER_ENV = "LEADERBOARD_SERVER"
TOKEN_ENV = "LEADERBOARD_TOKEN"
# File modes mean what they say on POSIX only; on Windows the user's profile folder's ACL guards
# the file, and os.fchmod does not exist before Python 3.13.
POSIX = os.name == "posix"


class NotLoggedIn(Exception):
    """No server or token in the environment or the saved login."""


@dataclass(frozen=True)
class Credentials:
    server: str
    token: str

    def __repr__(self) -> str:  # never show the token, not even in a traceback
        return f"Credentials(server={self.server!r}, token=<{len(self.token)} characters>)"


def credentials_path() -> Path:
    return Path(typer.get_app_dir("leaderboard")) / "credentials.json"


def credentials_save(credentials: Credentials) -> Path:
    """Write the login to :func:`credentials_path` with mode 0600 (its folder 0700), replacing
    any earlier one; the file is never readable by others, not even while it is written."""
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        if POSIX:
            os.fchmod(out.fileno(), 0o600)  # a file that existed keeps its old mode through O_CREAT
        json.dump({"server": credentials.server, "token": credentials.token}, out)
    return path


def credentials_forget() -> bool:
    """Delete the saved login; False when there was none."""
    try:
        credentials_path().unlink()
    except FileNotFoundError:
        return False
    return True


def credentials_load(*, need_token: bool = True) -> Credentials:
    """The environment's server and token, else the saved login's. Raises NotLoggedIn naming
    what is missing and how to provide it; ValueError when the saved file is unreadable or
    readable by others (a token others can read is a leaked token)."""
    saved: dict[str, str] = {}
    path = credentials_path()
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if POSIX and mode & 0o077:
            raise ValueError(f"{path} is readable by others (mode {mode:o}): run `chmod 600 {path}` "
                             "or `leaderboard login` again, and consider revoking the token")
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{path} is not valid JSON ({exc}): run `leaderboard login` again") from exc
    server = os.environ.get(SERVER_ENV) or saved.get("server", "")
    token = os.environ.get(TOKEN_ENV) or saved.get("token", "")
    if not server:
        raise NotLoggedIn(f"no server: run `leaderboard login` or set {SERVER_ENV}")
    if need_token and not token:
        raise NotLoggedIn(f"no API token: run `leaderboard login` or set {TOKEN_ENV}")
    return Credentials(server=server, token=token)
