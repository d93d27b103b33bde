"""`runner work`: consume evaluation jobs from the site (the work lives in runner/worker.py)."""
from __future__ import annotations

import os
from typing import Annotated

import typer

from runner.cli.common import (
    DEFAULT_DATA_ROOT,
    DataRoot,
    SaliencyMethods,
    Trust,
    err,
    pools_of,
    usable_device,
)


def work(
    server: Annotated[str, typer.Option(envvar="RUNNER_SERVER", help="the site's URL")],
    token: Annotated[str, typer.Option(envvar="RUNNER_TOKEN", help="this node's runner token")],
    pool: Annotated[list[str], typer.Option("--pool", envvar="RUNNER_POOLS",
                                            help="pool to serve, repeatable (queues runner.<pool>)")] = ["cpu"],  # noqa: B006
    data_root: DataRoot = DEFAULT_DATA_ROOT,
    broker: Annotated[str | None, typer.Option(envvar="CELERY_BROKER_URL",
                                               help="broker URL (default: the site's filesystem broker)")] = None,
    trust: Trust = False,
    device: Annotated[str | None, typer.Option(envvar="RUNNER_DEVICE",
                                               help="cpu, cuda or cuda:N (default: cuda when serving a gpu pool); "
                                               "checked before the worker starts")] = None,
    loglevel: Annotated[str, typer.Option(help="worker log level")] = "INFO",
    saliency: Annotated[bool, typer.Option(help="saliency maps for a sample of each classifier result (at most "
                                           "about 10% more time; --no-saliency sets RUNNER_SALIENCY=off)")] = True,
    saliency_methods: SaliencyMethods = "auto",
) -> None:
    """Consume evaluation jobs from the site until stopped."""
    if not saliency:
        os.environ["RUNNER_SALIENCY"] = "off"  # read by runner/saliency_sample.py in every job
    os.environ["RUNNER_SALIENCY_METHODS"] = saliency_methods  # checked by the option's callback; read per job
    from runner.sandbox import sandbox_available
    from runner.workdir import sweep_abandoned
    from runner.worker import WorkerSettings, default_broker_url, start_worker

    pools = pools_of(pool)
    status = sandbox_available()
    if not status.available:
        if not trust:
            err.print(f"[red]The sandbox is unavailable: {status.detail}.[/red] This runner refuses untrusted code "
                      "without it; install bubblewrap, or start with --trust for your own submissions only.")
            raise typer.Exit(2)
        err.print(f"[yellow]WARNING: the sandbox is unavailable ({status.detail}); --trust runs every job's code "
                  "as a plain process.[/yellow]")
    settings = WorkerSettings(server=server, token=token, pools=pools, data_root=data_root, trust=trust,
                              device=usable_device(device, pools, "runner work"))
    # Job folders a killed runner left (this runner's start is the cut-off; live ones are locked).
    removed = sweep_abandoned()
    if removed:
        err.print(f"removed {len(removed)} abandoned job folders", highlight=False)
    start_worker(settings, broker or default_broker_url(), loglevel=loglevel)
