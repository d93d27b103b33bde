"""`runner`: the runner node's command line, one module per command. Thin commands; the work
lives in worker.py, evaluate.py, nodeinfo.py, data_admin.py, bench.py and baselines/. Every option
can also come from an environment variable.

    runner work       consume jobs from the site (a Celery worker on runner.<pool>)   cli/work.py
    runner run        evaluate a file locally, exactly as a site job would be          cli/run.py
    runner check      torch, device, sandbox and datasets of this node                 cli/check.py
    runner register   a one-time code for this node's token                            cli/register.py
    runner data       list | prepare NAME | verify NAME | fake NAME under the data root cli/data.py
    runner bench      evaluation speed against the model's own forward pass            cli/bench.py
    runner baselines  reference models: export | denoisers | train                     cli/baselines.py
    runner architectures  the library architectures a .safetensors submission may name cli/architectures.py

What they share (consoles, options, device resolution, literal printing) is cli/common.py.
"""

from __future__ import annotations

import signal
from types import FrameType

import typer

from runner.cli import architectures, baselines, bench, check, data, register, run, work

app = typer.Typer(
    help="A runner node of the benchmark leaderboard.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(work.work)
app.command()(run.run)
app.command()(check.check)
app.command()(register.register)
app.add_typer(data.app, name="data")
app.command()(bench.bench)
app.add_typer(baselines.app, name="baselines")
app.command()(architectures.architectures)


def _terminated(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM (an operator's ``kill``, a supervisor stopping the node, a CI timeout) ends the
    command as an exception would: every ``finally`` runs, so the model server's sandbox is killed
    and its folder and scratch tmpfs are removed (runner/workdir.py), as after Ctrl-C. Python's
    default would end the process at once and leave them for the next ``runner work`` to sweep.
    Exit status 128 + signal, as the shell reports a signal."""
    raise SystemExit(128 + signum)


@app.callback()
def _every_command() -> None:
    # `runner work` hands the process to Celery, whose worker installs its own SIGTERM handling
    # (a warm shutdown) over this one.
    signal.signal(signal.SIGTERM, _terminated)


def main() -> None:  # pragma: no cover - `python -m runner.cli`
    app(prog_name="runner")
