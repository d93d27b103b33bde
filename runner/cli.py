"""`runner`: the runner node's command line. Thin commands; the work lives in worker.py,
evaluate.py and nodeinfo.py. Every option can also come from an environment variable.

    runner work    consume jobs from the site (a Celery worker on runner.<pool>)
    runner run     evaluate a file locally, exactly as a site job would be
    runner check   torch, device, sandbox and datasets of this node
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="A runner node of the benchmark leaderboard.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
out = Console()
err = Console(stderr=True)

DataRoot = Annotated[Path, typer.Option("--data-root", envvar="RUNNER_DATA", help="where datasets live")]
DEFAULT_DATA_ROOT = Path.home() / ".cache" / "leaderboard-data"


def _pools(values: list[str]) -> list[str]:
    pools = [p for value in values for p in value.replace(",", " ").split() if p]
    return pools or ["cpu"]


@app.command()
def work(
    server: Annotated[str, typer.Option(envvar="RUNNER_SERVER", help="the site's URL")],
    token: Annotated[str, typer.Option(envvar="RUNNER_TOKEN", help="this node's runner token")],
    pool: Annotated[list[str], typer.Option("--pool", envvar="RUNNER_POOLS",
                                            help="pool to serve, repeatable (queues runner.<pool>)")] = ["cpu"],  # noqa: B006
    data_root: DataRoot = DEFAULT_DATA_ROOT,
    broker: Annotated[str | None, typer.Option(envvar="CELERY_BROKER_URL",
                                               help="broker URL (default: the site's filesystem broker)")] = None,
    trust: Annotated[bool, typer.Option("--trust", envvar="RUNNER_TRUST",
                                        help="run without the sandbox when it is unavailable")] = False,
    device: Annotated[str | None, typer.Option(envvar="RUNNER_DEVICE",
                                               help="cpu or cuda (default: cuda when serving a gpu pool)")] = None,
    loglevel: Annotated[str, typer.Option(help="worker log level")] = "INFO",
) -> None:
    """Consume evaluation jobs from the site until stopped."""
    from runner.sandbox import sandbox_available
    from runner.worker import WorkerSettings, default_broker_url, start_worker

    pools = _pools(pool)
    status = sandbox_available()
    if not status.available:
        if not trust:
            err.print(f"[red]The sandbox is unavailable: {status.detail}.[/red] This runner refuses untrusted code "
                      "without it; install bubblewrap, or start with --trust for your own submissions only.")
            raise typer.Exit(2)
        err.print(f"[yellow]WARNING: the sandbox is unavailable ({status.detail}); --trust runs every job's code "
                  "as a plain process.[/yellow]")
    settings = WorkerSettings(server=server, token=token, pools=pools, data_root=data_root, trust=trust,
                              device=device or ("cuda" if "gpu" in pools else "cpu"))
    start_worker(settings, broker or default_broker_url(), loglevel=loglevel)


def _hparams(value: str | None) -> dict[str, Any]:
    if not value:
        return {}
    path = Path(value)
    text = path.read_text() if not value.lstrip().startswith("{") and path.is_file() else value
    try:
        hparams = json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not JSON and not a JSON file: {exc}") from exc
    if not isinstance(hparams, dict):
        raise typer.BadParameter("hyperparameters must be a JSON object")
    return hparams


@app.command()
def run(
    task: Annotated[str, typer.Option(help="task slug, e.g. opt-f1")],
    artifact: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="the file to evaluate")],
    hparams: Annotated[str | None, typer.Option(help="a JSON object, or a path to a JSON file")] = None,
    data_root: DataRoot = DEFAULT_DATA_ROOT,
    device: Annotated[str, typer.Option(envvar="RUNNER_DEVICE", help="cpu or cuda")] = "cpu",
    output: Annotated[Path | None, typer.Option("--out", help="where to write the result JSON "
                                                "(default: result-<task>.json)")] = None,
    trust: Annotated[bool, typer.Option("--trust", envvar="RUNNER_TRUST",
                                        help="run without the sandbox when it is unavailable")] = False,
) -> None:
    """Evaluate a file locally through the same path as a site job; print and save the result."""
    from rich.progress import Progress

    from runner.evaluate import evaluate, local_job_spec
    from runner.spec import EvaluationError

    try:
        spec = local_job_spec(task, artifact, _hparams(hparams))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--task") from exc
    except EvaluationError as exc:
        err.print(f"[red]{exc.kind}[/red]: {exc.message}")
        raise typer.Exit(1) from exc
    try:
        with Progress(console=err, transient=True) as bar:
            handle = bar.add_task(task, total=1.0)
            result = evaluate(spec, artifact, data_root=data_root, trust=trust, device=device,
                              progress=lambda f, m: bar.update(handle, completed=f, description=f"{task} {m}"))
    except EvaluationError as exc:
        err.print(f"[red]{exc.kind}[/red]: {exc.message}")
        if exc.log_tail:
            err.print(exc.log_tail[-2000:], markup=False, highlight=False)
        raise typer.Exit(1) from exc
    table = Table(title=f"{task}: {artifact.name}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result["metrics"].items():
        table.add_row(key, f"{value:.6g}")
    out.print(table)
    env, timing = result.get("env", {}), result.get("timing", {})
    out.print(f"sandbox: {env.get('sandbox')}  device: {env.get('device')}  wall: {timing.get('wall_s')} s")
    path = output or Path(f"result-{task}.json")
    path.write_text(json.dumps(result, indent=2) + "\n")
    out.print(f"result written to {path}")


@app.command()
def check(data_root: DataRoot = DEFAULT_DATA_ROOT) -> None:
    """Report torch, the device, the sandbox and the datasets present; exit 1 without a sandbox."""
    from runner.nodeinfo import node_report

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
    table.add_row("data root", report["data_root"])
    present = [name for name, ok in report["datasets"].items() if ok]
    table.add_row("datasets present", ", ".join(present) or "none")
    table.add_row("tasks this runner evaluates", ", ".join(report["tasks"]))
    out.print(table)
    if not sandbox["available"]:
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover - `python -m runner.cli`
    app(prog_name="runner")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
