"""`runner data list | prepare NAME | verify NAME | fake NAME`: datasets under the data root (the
work lives in runner/data_admin.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from runner.cli.common import DEFAULT_DATA_ROOT, err, failure_line, out, progress_bar

app = typer.Typer(help="Datasets under the data root: list, prepare, verify, fake.", no_args_is_help=True)
Root = Annotated[Path, typer.Option("--root", envvar="RUNNER_DATA", help="the data root (RUNNER_DATA)")]


def _dataset(name: str) -> str:
    from runner import data_admin

    try:
        data_admin.resolve(name)
    except KeyError as exc:
        raise typer.BadParameter(str(exc.args[0]), param_hint="NAME") from exc
    return name


def _print_report(report: Any) -> None:
    colour = "green" if report.ok else "red"
    status = "ok" if report.ok else "MISSING"
    synthetic = "  [yellow]SYNTHETIC[/yellow]" if report.synthetic else ""
    out.print(f"[{colour}]{report.name}: {status}[/{colour}]{synthetic}")
    for key, value in report.counts.items():
        out.print(f"  {key}: {value}", highlight=False)
    for key, value in report.checksums.items():
        out.print(f"  checksum {key}: {value}", highlight=False)
    for line in report.notes:
        out.print(f"  note: {line}", highlight=False)
    for line in report.warnings:
        out.print(f"  [yellow]warning[/yellow]: {line}", highlight=False)
    for line in report.errors:
        out.print(f"  [red]error[/red]: {line}", highlight=False)


@app.command("list")
def data_list(root: Root = DEFAULT_DATA_ROOT) -> None:
    """Every dataset a catalogue task reads: present or not, synthetic or real, and where."""
    from runner import data_admin

    table = Table(title=f"datasets under {root}")
    for column in ("name", "title", "present", "where"):
        table.add_column(column)
    for entry in data_admin.entries(root):
        if entry.present:
            present = "[yellow]synthetic[/yellow]" if entry.synthetic else "[green]yes[/green]"
        else:
            present = "no (manual download)" if entry.manual else "no"
        table.add_row(entry.name, entry.title, present, entry.path)
    out.print(table)


@app.command("prepare")
def data_prepare(name: Annotated[str, typer.Argument(help="dataset, e.g. cifar-10-batches-py or cifar10")],
                 root: Root = DEFAULT_DATA_ROOT) -> None:
    """Download where a network and a public release exist, unpack, verify checksums."""
    from runner import data_admin
    from runner.spec import EvaluationError

    _dataset(name)
    try:
        with progress_bar(name) as show:
            report = data_admin.prepare(name, root, show)
    except EvaluationError as exc:
        err.print(failure_line(exc.kind, exc.message))
        raise typer.Exit(1) from exc
    _print_report(report)
    if not report.ok:
        raise typer.Exit(1)


@app.command("verify")
def data_verify(
    name: Annotated[str, typer.Argument(help="dataset, e.g. CIFAR-10-C")],
    root: Root = DEFAULT_DATA_ROOT,
    deep: Annotated[bool, typer.Option(help="also hash every large file")] = False,
) -> None:
    """Check counts and checksums; a difference from the release is a warning, absence an error."""
    from runner import data_admin

    _dataset(name)
    report = data_admin.verify(name, root, deep=deep)
    _print_report(report)
    if not report.ok:
        raise typer.Exit(1)


@app.command("fake")
def data_fake(
    name: Annotated[str, typer.Argument(help="dataset, e.g. imagenet-c")],
    root: Root = DEFAULT_DATA_ROOT,
    n_per_class: Annotated[int | None, typer.Option(help="images per class (default: the dataset's)")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
) -> None:
    """Write a small synthetic copy in the release's format, labelled synthetic everywhere."""
    from runner import data_admin

    _dataset(name)
    with err.status(f"writing a fake {name}"):
        try:
            folder = data_admin.fake(name, root, n_per_class=n_per_class, seed=seed)
        except ValueError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from exc
    out.print(f"[yellow]synthetic[/yellow] {name} written to {folder}")
