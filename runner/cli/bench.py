"""`runner bench`: evaluation speed against the model's own forward pass, or the whole GPU check
(the work lives in runner/bench.py and runner/bench_suite.py)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from runner.catalogue import track_of
from runner.cli.common import DEFAULT_DATA_ROOT, DataRoot, Trust, err, failure_line, out


def bench(
    task: Annotated[str | None, typer.Option(help="task slug, e.g. cifar10 or opt-digits")] = None,
    suite: Annotated[str | None, typer.Option(help="gpu: the whole GPU check in one run (runner/bench_suite.py) "
                                              "instead of one task")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="with --suite: tiny sizes, to prove the script "
                                        "runs (CI, --device cpu)")] = False,
    output: Annotated[Path | None, typer.Option("--out", dir_okay=False,
                                                help="with --suite: where to write the figures as JSON")] = None,
    artifact: Annotated[Path | None, typer.Option(exists=True, dir_okay=False,
                                                  help="the model file (classifier and denoising tasks)")] = None,
    device: Annotated[str, typer.Option(envvar="RUNNER_DEVICE", help="cpu or cuda")] = "cpu",
    batches: Annotated[int, typer.Option(min=1, help="batches timed after the warm-up batch")] = 20,
    batch_size: Annotated[int | None, typer.Option(min=1, help="default: the task's")] = None,
    repeats: Annotated[int, typer.Option(min=1, help="interleaved rounds; each figure is the best")] = 3,
    precision: Annotated[str, typer.Option(help="fp32 or bf16")] = "fp32",
    seconds: Annotated[float, typer.Option(help="time budget of a training benchmark")] = 30.0,
    data_root: DataRoot = DEFAULT_DATA_ROOT,
    trust: Trust = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the measurements as JSON")] = False,
) -> None:
    """Evaluation speed against the model's own: evaluation ÷ pure forward, sandboxed ÷ trusted.

    The model also runs in this process for the trusted figures: bench only files you trust.
    With --suite gpu: the five figures of the GPU check, each against its goal (docs/benchmarks.md)."""
    from runner.bench import bench as run_bench
    from runner.spec import EvaluationError

    if suite is not None:
        _bench_suite(suite, device=device, quick=quick, output=output, trust=trust)
        return
    if task is None:
        raise typer.BadParameter("name a task (--task), or a suite (--suite gpu)", param_hint="--task")
    try:
        with err.status(f"benchmarking {task} on {device}") as status:
            report = run_bench(task, artifact, device=device, data_root=data_root, batches=batches,
                               batch_size=batch_size, precision=precision, trust=trust, seconds=seconds,
                               repeats=repeats,
                               progress=lambda m: status.update(f"{task}: {m}"))
    except EvaluationError as exc:
        err.print(failure_line(exc.kind, exc.message))
        raise typer.Exit(1) from exc
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if as_json:
        out.print_json(json.dumps(report))
        return
    if "eval_over_forward" not in report:  # a training benchmark: its own keys
        for key, value in report.items():
            out.print(f"{key}: {value}", highlight=False)
        return
    synthetic = " (synthetic data)" if report["synthetic_data"] else ""
    out.print(f"bench {task} on {report['device']} ({report['device_name']}): {report['format']}, "
              f"{report['precision']}, batch {report['batch_size']}, {report['batches']} batches after a "
              f"warm-up batch, best of {report['repeats']} rounds, {report['threads']} threads{synthetic}",
              highlight=False)
    rows = (("pure forward (trusted, in-process)", "forward_items_per_s"),
            ("pure forward (in the sandbox)", "forward_in_sandbox_items_per_s"),
            ("evaluation, trusted (in-process)", "trusted_eval_items_per_s"),
            (f"evaluation, sandboxed ({report['sandbox']})", "sandboxed_eval_items_per_s"))
    unit = "images/s" if track_of(task) == "denoise" else "items/s"
    for label, key in rows:
        if report[key] is not None:
            out.print(f"{label:<40} {report[key]:>12.1f} {unit}", highlight=False)
    out.print(f"ratio evaluation ÷ pure forward: {report['eval_over_forward']:.3f}", highlight=False)
    out.print(f"ratio sandboxed ÷ trusted: {report['sandboxed_over_trusted']:.3f}", highlight=False)
    if "per_image_cost" in report:
        out.print(f"ratio per-image outcomes (evaluation time with ÷ without): {report['per_image_cost']:.3f}",
                  highlight=False)


def _bench_suite(name: str, *, device: str, quick: bool, output: Path | None, trust: bool) -> None:
    """Run the suite, print its notes and one table row per figure, write the JSON; exit 1 when
    a step failed (a missed goal is a finding, not a failure of the command)."""
    import time

    from rich.markup import escape

    from runner.bench_suite import run_suite

    if name != "gpu":
        raise typer.BadParameter(f"{name!r}: the suite is gpu", param_hint="--suite")
    began = time.monotonic()

    def show(message: str) -> None:
        status.update(message)
        err.print(f"[{time.monotonic() - began:6.1f} s] {message}", markup=False, highlight=False)

    try:
        with err.status(f"runner bench --suite gpu on {device}") as status:
            report = run_suite(device=device, quick=quick, trust=trust, progress=show)
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(2) from exc
    env = report.env
    out.print(f"runner bench --suite gpu on {device} ({env['device_name']}): torch {env['torch']}, CUDA "
              f"{env['cuda']}, python {env['python']}, {'quick sizes, ' if quick else ''}{report.wall_s:.0f} s",
              highlight=False)
    for note in report.notes:
        out.print(note, highlight=False)
    table = Table(title="GPU check")
    for column, justify in (("figure", "left"), ("value", "right"), ("goal", "right"), ("result", "left"),
                            ("detail", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for f in report.figures:
        if f.error:
            value, result, detail = "-", "[red]ERROR[/red]", escape(f.error.splitlines()[0])
        else:
            value = f"{f.value:.3f}" if f.unit == "ratio" else f"{f.value:.1f} s"
            result = "[green]pass[/green]" if f.passed else "[red]FAIL[/red]"
            detail = escape(f.detail)
        goal = f"≥ {f.goal:g}" if f.goal is not None else "succeeds"
        table.add_row(escape(f.label), value, goal, result, detail)
    out.print(table)
    for f in report.errors:
        err.print(f"[red]{f.key}[/red]: {escape(f.error)}", highlight=False)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        out.print(f"figures written to {output}", highlight=False)
    if report.errors:
        raise typer.Exit(1)
