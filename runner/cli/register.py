"""`runner register`: a one-time registration code for this node's token (runner/register.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runner.cli.common import out


def register(
    server: Annotated[str, typer.Option(envvar="RUNNER_SERVER", help="the site's URL")],
    code: Annotated[str, typer.Option(help="the one-time code a maintainer gave you")],
    name: Annotated[str, typer.Option(help="this node's name, e.g. gpu-7")],
    token_file: Annotated[Path | None, typer.Option(help="where to write RUNNER_SERVER/TOKEN/POOLS")] = None,
) -> None:
    """Exchange a one-time registration code for this node's token (written to a 0600 env file)."""
    from runner.register import RegistrationError
    from runner.register import register as do_register

    try:
        answer = do_register(server=server, code=code, name=name, token_file=token_file)
    except RegistrationError as exc:
        out.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    out.print(f"registered [bold]{answer['name']}[/bold] for pools {', '.join(answer['pools'])}; "
              f"token written to {answer['token_file']} (start with: set -a; . {answer['token_file']}; runner work)")
