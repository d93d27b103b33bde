"""`runner check`: torch, the device, the sandbox and the datasets of this node (runner/nodeinfo.py)."""
from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from runner.cli.common import DEFAULT_DATA_ROOT, DataRoot, err, out, pools_of, resolved_device


def check(
    data_root: DataRoot = DEFAULT_DATA_ROOT,
    pool: Annotated[list[str], typer.Option("--pool", envvar="RUNNER_POOLS",
                                            help="the pools `runner work` would serve")] = ["cpu"],  # noqa: B006
    device: Annotated[str | None, typer.Option(envvar="RUNNER_DEVICE",
                                               help="cpu, cuda or cuda:N (default: as `runner work`: cuda "
                                               "for a gpu pool)")] = None,
) -> None:
    """Report torch, the device, the sandbox and the datasets present; exit 1 without a sandbox
    or when the device `runner work` would use with these options is unusable."""
    from runner.devices import probe
    from runner.nodeinfo import node_report

    chosen, implied = resolved_device(device, pools_of(pool))
    device_report = probe(chosen)
    report = node_report(data_root)
    table = Table(title="runner check", show_header=False)
    table.add_column("what")
    table.add_column("value")
    for key in ("runner", "python", "torch", "cuda", "device"):
        table.add_row(key, str(report[key]))
    sandbox = report["sandbox"]
    colour = "green" if sandbox["available"] else "red"
    table.add_row("sandbox", f"[{colour}]{'available' if sandbox['available'] else 'UNAVAILABLE'}[/{colour}]: "
                  f"{sandbox['detail']}")
    colour = "green" if device_report.usable else "red"
    table.add_row("jobs run on", f"[{colour}]{device_report.describe()}[/{colour}]"
                  + (" (implied by the gpu pool)" if implied else ""))
    table.add_row("data root", report["data_root"])
    present = [name for name, ok in report["datasets"].items() if ok]
    table.add_row("datasets present", ", ".join(present) or "none")
    table.add_row("tasks this runner evaluates", ", ".join(report["tasks"]))
    out.print(table)
    if not device_report.usable:
        err.print(f"[red]{chosen} is not usable here[/red]: start `runner work` with --device cpu"
                  + (" (the gpu pool implies cuda unless told otherwise)" if implied else ""), highlight=False)
    if not sandbox["available"] or not device_report.usable:
        raise typer.Exit(1)
