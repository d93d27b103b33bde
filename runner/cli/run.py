"""`runner run`: evaluate a file locally through the same path as a site job (runner/evaluate.py)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from runner.cli.common import (
    DEFAULT_DATA_ROOT,
    DataRoot,
    SaliencyMethods,
    Trust,
    err,
    failure_line,
    out,
    progress_bar,
    usable_device,
)


def _hparams(value: str | None, what: str = "hyperparameters", option: str = "--hparams") -> dict[str, Any]:
    if not value:
        return {}
    path = Path(value)
    text = path.read_text() if not value.lstrip().startswith("{") and path.is_file() else value
    try:
        hparams = json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not JSON and not a JSON file: {exc}", param_hint=option) from exc
    if not isinstance(hparams, dict):
        raise typer.BadParameter(f"{what} must be a JSON object", param_hint=option)
    return hparams


def _result_path(task: str, output: Path | None, several: bool) -> Path:
    if output is None:
        return Path(f"result-{task}.json")
    if several:
        output.mkdir(parents=True, exist_ok=True)
        return output / f"result-{task}.json"
    return output


def run(
    task: Annotated[list[str], typer.Option(help="task slug, e.g. opt-f1 or cifar10-c; repeat it to evaluate "
                                            "one file on several tasks with one model load")],
    artifact: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="the file to evaluate")],
    hparams: Annotated[str | None, typer.Option(help="a JSON object, or a path to a JSON file")] = None,
    data_root: DataRoot = DEFAULT_DATA_ROOT,
    device: Annotated[str, typer.Option(envvar="RUNNER_DEVICE", help="cpu, cuda or cuda:N")] = "cpu",
    output: Annotated[Path | None, typer.Option("--out", help="where to write the result JSON (default: "
                                                "result-<task>.json); a folder when several tasks")] = None,
    trust: Trust = False,
    params: Annotated[str | None, typer.Option(help="task parameters that replace the catalogue's, a JSON object "
                                               "(say, a smaller training budget for a quick check; a site job "
                                               "carries the catalogue's)")] = None,
    saliency: Annotated[bool, typer.Option(help="saliency maps for a sample of a classifier's images, in the "
                                           "result under 'saliency' (--no-saliency: RUNNER_SALIENCY=off)")] = True,
    saliency_methods: SaliencyMethods = "auto",
) -> None:
    """Evaluate a file locally through the same path as a site job; print and save the result.

    With several tasks the model server stays up between them (as it does for one submission's
    jobs on a worker), and imagenet-c gets its relative mCE from this run's imagenet-val top-1.
    A classifier task also writes its per-image outcomes beside its result: ``R.json`` gets
    ``R.per_image.npz`` (runner.metrics.per_image), named under the result's ``files.per_image``;
    with several tasks each ``result-<task>.json`` gets its own ``result-<task>.per_image.npz``."""
    if not saliency:
        os.environ["RUNNER_SALIENCY"] = "off"  # read by runner/saliency_sample.py
    os.environ["RUNNER_SALIENCY_METHODS"] = saliency_methods  # checked by the option's callback
    from runner.evaluate import LocalRun, TaskParamsError, evaluate
    from runner.metrics.per_image import file_name
    from runner.spec import EvaluationError
    from runner.untrusted import printable

    plan = LocalRun(task, artifact, _hparams(hparams), params=_hparams(params, "task parameters", "--params"))
    device = usable_device(device, [], "runner run")
    failed = False
    for slug in plan.tasks:
        try:
            spec = plan.job_spec(slug)
        except TaskParamsError as exc:
            raise typer.BadParameter(str(exc), param_hint="--params") from exc
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--task") from exc
        except EvaluationError as exc:
            err.print(failure_line(exc.kind, exc.message))
            raise typer.Exit(1) from exc
        path = _result_path(slug, output, len(plan.tasks) > 1)
        try:
            with progress_bar(slug) as show:
                result = evaluate(spec, artifact, data_root=data_root, trust=trust, device=device,
                                  progress=show, per_image_out=file_name(path))
        except EvaluationError as exc:
            err.print(failure_line(f"{slug}: {exc.kind}", exc.message))
            if exc.log_tail:
                err.print(Text(printable(exc.log_tail[-2000:])))
            failed = True
            continue
        plan.record(slug, result)
        _print_result(slug, artifact, result)
        path.write_text(json.dumps(result, indent=2) + "\n")
        out.print(f"result written to {path}")
        if "per_image" in result.get("files", {}):
            out.print(f"per-image outcomes written to {file_name(path)}")
    if failed:
        raise typer.Exit(1)


def _print_result(task: str, artifact: Path, result: dict[str, Any]) -> None:
    """The metrics table and one line of environment, every value printed literally (the model
    server reports some of them, and a file name may hold brackets)."""
    from runner.untrusted import printable

    table = Table(title=Text(printable(f"{task}: {artifact.name}", keep_newlines=False)))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result["metrics"].items():
        table.add_row(Text(printable(key, keep_newlines=False)), f"{value:.6g}")
    out.print(table)
    env, timing = result.get("env", {}), result.get("timing", {})
    line = (f"sandbox: {env.get('sandbox')}  device: {env.get('device')}  wall: {timing.get('wall_s')} s"
            + (f"  {timing.get('items_per_s')} items/s" if "items_per_s" in timing else ""))
    text = Text(printable(line, keep_newlines=False))
    if env.get("synthetic_data"):
        text.append("  SYNTHETIC DATA", style="yellow")
    out.print(text)
