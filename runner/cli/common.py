"""What the `runner` commands share: the two consoles (results on stdout, progress and errors on
stderr), the options several commands take, device resolution, and printing a submission's
words literally."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from runner.progress import Progress

out = Console()
err = Console(stderr=True)

DataRoot = Annotated[Path, typer.Option("--data-root", envvar="RUNNER_DATA", help="where datasets live")]
Trust = Annotated[bool, typer.Option("--trust", envvar="RUNNER_TRUST",
                                     help="run without the sandbox when it is unavailable")]
DEFAULT_DATA_ROOT = Path.home() / ".cache" / "leaderboard-data"


def _saliency_methods(value: str | None) -> str:
    """``--saliency-methods`` read by runner.saliency_methods.parse_methods and spelled as it reads
    it ("auto" or the names joined by commas); an unknown name exits 2 naming the known ones."""
    from runner.saliency_methods import parse_methods

    try:
        methods = parse_methods(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    return "auto" if methods is None else ",".join(methods)


SaliencyMethods = Annotated[str, typer.Option(
    "--saliency-methods", envvar="RUNNER_SALIENCY_METHODS", callback=_saliency_methods,
    help="saliency methods for each classifier result: auto (every method the model's format allows) or a comma "
    "list of gradcam, gradcam++, smooth-gradcam++, normgrad, smoothgrad, occlusion (one the format cannot run "
    "is recorded as skipped)")]


def pools_of(values: list[str]) -> list[str]:
    """The pools named by repeated or comma-separated ``--pool`` values; ["cpu"] when none."""
    pools = [p for value in values for p in value.replace(",", " ").split() if p]
    return pools or ["cpu"]


def resolved_device(device: str | None, pools: list[str]) -> tuple[str, bool]:
    """runner.devices.resolve_device: (the device, whether a gpu pool implied it); exit 2 with the
    reason when ``device`` names none."""
    from runner.devices import resolve_device

    try:
        return resolve_device(device, pools)
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc


def usable_device(device: str | None, pools: list[str], command: str) -> str:
    """The device ``command`` runs on (``--device``, else cuda for a gpu pool, else cpu), checked
    from a probe in the job sandbox; exit 2 with what to do instead when it is unusable, before
    anything connects to the broker or claims a job."""
    from runner.devices import startup_problem

    chosen, implied = resolved_device(device, pools)
    problem = startup_problem(chosen, implied_by_pool=implied, command=command)
    if problem:
        err.print(f"[red]{problem}[/red]", highlight=False)
        raise typer.Exit(2)
    return chosen


@contextlib.contextmanager
def progress_bar(label: str) -> Iterator[Progress]:
    """A transient bar on stderr and the runner.progress.Progress that moves it: ``label``, then
    each message, shown literally (a job's messages may quote the submission's words)."""
    from rich.progress import Progress as Bar

    from runner.untrusted import printable

    with Bar(console=err, transient=True) as bar:
        handle = bar.add_task(escape(label), total=1.0)

        def show(fraction: float, message: str) -> None:
            bar.update(handle, completed=fraction,
                       description=escape(f"{label} {printable(message, keep_newlines=False)}"))

        yield show


def failure_line(what: str, message: str) -> Text:
    """``what`` in red, then the message as literal text: it may hold the submission's words, which
    are neither markup nor terminal control (control characters are shown escaped)."""
    from runner.untrusted import printable

    return Text.assemble((printable(what, keep_newlines=False), "red"), ": ", printable(message))


