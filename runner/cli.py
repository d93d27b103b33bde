"""`runner`: the runner node's command line. Thin commands; the work lives in worker.py,
evaluate.py, nodeinfo.py, data_admin.py, bench.py and baselines/. Every option can also come from
an environment variable.

    runner work       consume jobs from the site (a Celery worker on runner.<pool>)
    runner run        evaluate a file locally, exactly as a site job would be
    runner check      torch, device, sandbox and datasets of this node
    runner data       list | prepare NAME | verify NAME | fake NAME under the data root
    runner bench      evaluation speed against the model's own forward pass
    runner baselines  export torchvision classifiers as submissions
"""
from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from runner.progress import Progress

app = typer.Typer(help="A runner node of the benchmark leaderboard.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
out = Console()
err = Console(stderr=True)

DataRoot = Annotated[Path, typer.Option("--data-root", envvar="RUNNER_DATA", help="where datasets live")]
Trust = Annotated[bool, typer.Option("--trust", envvar="RUNNER_TRUST",
                                     help="run without the sandbox when it is unavailable")]
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
    trust: Trust = False,
    device: Annotated[str | None, typer.Option(envvar="RUNNER_DEVICE",
                                               help="cpu, cuda or cuda:N (default: cuda when serving a gpu pool); "
                                               "checked before the worker starts")] = None,
    loglevel: Annotated[str, typer.Option(help="worker log level")] = "INFO",
) -> None:
    """Consume evaluation jobs from the site until stopped."""
    from runner.sandbox import sandbox_available
    from runner.workdir import sweep_abandoned
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
                              device=_usable_device(device, pools, "runner work"))
    # Job folders a killed runner left (this runner's start is the cut-off; live ones are locked).
    removed = sweep_abandoned()
    if removed:
        err.print(f"removed {len(removed)} abandoned job folders", highlight=False)
    start_worker(settings, broker or default_broker_url(), loglevel=loglevel)


def _resolved_device(device: str | None, pools: list[str]) -> tuple[str, bool]:
    """runner.devices.resolve_device: (the device, whether a gpu pool implied it); exit 2 with the
    reason when ``device`` names none."""
    from runner.devices import resolve_device

    try:
        return resolve_device(device, pools)
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc


def _usable_device(device: str | None, pools: list[str], command: str) -> str:
    """The device ``command`` runs on (``--device``, else cuda for a gpu pool, else cpu), checked
    from a probe in the job sandbox; exit 2 with what to do instead when it is unusable, before
    anything connects to the broker or claims a job."""
    from runner.devices import startup_problem

    chosen, implied = _resolved_device(device, pools)
    problem = startup_problem(chosen, implied_by_pool=implied, command=command)
    if problem:
        err.print(f"[red]{problem}[/red]", highlight=False)
        raise typer.Exit(2)
    return chosen


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


def _run_order(tasks: list[str]) -> list[str]:
    """Each task once; imagenet-val before imagenet-c, whose relative mCE needs its top-1."""
    ordered = list(dict.fromkeys(tasks))
    if "imagenet-val" in ordered and "imagenet-c" in ordered:
        ordered.remove("imagenet-val")
        ordered.insert(ordered.index("imagenet-c"), "imagenet-val")
    return ordered


def _result_path(task: str, output: Path | None, several: bool) -> Path:
    if output is None:
        return Path(f"result-{task}.json")
    if several:
        output.mkdir(parents=True, exist_ok=True)
        return output / f"result-{task}.json"
    return output


@app.command()
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
) -> None:
    """Evaluate a file locally through the same path as a site job; print and save the result.

    With several tasks the model server stays up between them (as it does for one submission's
    jobs on a worker), and imagenet-c gets its relative mCE from this run's imagenet-val top-1."""
    from runner.evaluate import evaluate, local_job_spec
    from runner.spec import EvaluationError
    from runner.untrusted import printable

    tasks = _run_order(task)
    settings = _hparams(hparams)
    device = _usable_device(device, [], "runner run")
    failed = False
    clean_top1: float | None = None
    for slug in tasks:
        try:
            spec = local_job_spec(slug, artifact, settings)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--task") from exc
        except EvaluationError as exc:
            err.print(_failure_line(exc.kind, exc.message))
            raise typer.Exit(1) from exc
        if slug == "imagenet-c" and clean_top1 is not None and "clean_top1" not in settings:
            spec.task.params["clean_top1"] = clean_top1
        try:
            with _progress_bar(slug) as show:
                result = evaluate(spec, artifact, data_root=data_root, trust=trust, device=device,
                                  progress=show)
        except EvaluationError as exc:
            err.print(_failure_line(f"{slug}: {exc.kind}", exc.message))
            if exc.log_tail:
                err.print(Text(printable(exc.log_tail[-2000:])))
            failed = True
            continue
        if slug == "imagenet-val":
            clean_top1 = result["metrics"]["top1"]
        _print_result(slug, artifact, result)
        path = _result_path(slug, output, len(tasks) > 1)
        path.write_text(json.dumps(result, indent=2) + "\n")
        out.print(f"result written to {path}")
    if failed:
        raise typer.Exit(1)


@contextlib.contextmanager
def _progress_bar(label: str) -> Iterator[Progress]:
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


def _failure_line(what: str, message: str) -> Text:
    """``what`` in red, then the message as literal text: it may hold the submission's words, which
    are neither markup nor terminal control (control characters are shown escaped)."""
    from runner.untrusted import printable

    return Text.assemble((printable(what, keep_newlines=False), "red"), ": ", printable(message))


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


@app.command()
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

    chosen, implied = _resolved_device(device, _pools(pool))
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


@app.command()
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


# --------------------------------------------------------------------------------------------
# runner data: list | prepare | verify | fake (the work lives in runner/data_admin.py)
# --------------------------------------------------------------------------------------------
data_app = typer.Typer(help="Datasets under the data root: list, prepare, verify, fake.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")
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


@data_app.command("list")
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


@data_app.command("prepare")
def data_prepare(name: Annotated[str, typer.Argument(help="dataset, e.g. cifar-10-batches-py or cifar10")],
                 root: Root = DEFAULT_DATA_ROOT) -> None:
    """Download where a network and a public release exist, unpack, verify checksums."""
    from runner import data_admin
    from runner.spec import EvaluationError

    _dataset(name)
    try:
        with _progress_bar(name) as show:
            report = data_admin.prepare(name, root, show)
    except EvaluationError as exc:
        err.print(_failure_line(exc.kind, exc.message))
        raise typer.Exit(1) from exc
    _print_report(report)
    if not report.ok:
        raise typer.Exit(1)


@data_app.command("verify")
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


@data_app.command("fake")
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


# --------------------------------------------------------------------------------------------
# runner bench (the work lives in runner/bench.py)
# --------------------------------------------------------------------------------------------
@app.command()
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
        err.print(_failure_line(exc.kind, exc.message))
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
    unit = "images/s" if task.startswith("denoise-") else "items/s"
    for label, key in rows:
        if report[key] is not None:
            out.print(f"{label:<40} {report[key]:>12.1f} {unit}", highlight=False)
    out.print(f"ratio evaluation ÷ pure forward: {report['eval_over_forward']:.3f}", highlight=False)
    out.print(f"ratio sandboxed ÷ trusted: {report['sandboxed_over_trusted']:.3f}", highlight=False)


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


# --------------------------------------------------------------------------------------------
# runner baselines export | denoisers | train (the work lives in runner/baselines/classifiers/export.py
# and runner/denoise/)
# --------------------------------------------------------------------------------------------
baselines_app = typer.Typer(help="Reference models.", no_args_is_help=True)
app.add_typer(baselines_app, name="baselines")


@baselines_app.command("export")
def baselines_export(
    arch: Annotated[str, typer.Option(help="a torchvision architecture: resnet18, resnet50, ...")],
    output: Annotated[Path, typer.Option("--out", dir_okay=False, help="the TorchScript file to write")],
    weights: Annotated[str, typer.Option(help="torchvision weights name (needs a network or a cached copy)")]
    = "DEFAULT",
    random_init: Annotated[bool, typer.Option("--random-init", help="random weights, for smoke tests only "
                                              "(labelled so inside the file)")] = False,
) -> None:
    """Export a torchvision classifier as TorchScript that follows the submission contract."""
    from runner.baselines.classifiers.export import ExportError, export_torchvision

    try:
        with err.status(f"exporting {arch}"):
            meta = export_torchvision(arch, output, weights=weights, random_init=random_init)
    except ExportError as exc:
        err.print(f"[red]cannot export {arch}[/red]: {exc}", highlight=False)
        raise typer.Exit(1) from exc
    label = "[yellow]RANDOM INIT (not pretrained): for smoke tests only[/yellow]" if random_init \
        else f"weights {meta['weights']}"
    out.print(f"{arch} ({label}) written to {output}: {meta['size']:,} bytes, sha256 {meta['sha256']}")


@baselines_app.command("denoisers")
def baselines_denoisers(
    output: Annotated[Path, typer.Option("--out", file_okay=False, help="the folder to write")],
) -> None:
    """Write the reference denoisers as submission artifacts (identity, Gaussian and median filters and
    Noise2Score as TorchScript; BM3D as a builtin-baseline file) with a baselines.json manifest."""
    from runner.denoise.baselines import export_baselines

    with err.status("exporting the reference denoisers"):
        paths = export_baselines(output)
    for name, path in paths.items():
        out.print(f"{name}: {path} ({path.stat().st_size:,} bytes)", highlight=False)
    out.print(f"manifest: {output / 'baselines.json'}", highlight=False)


@baselines_app.command("train")
def baselines_train(
    method: Annotated[str, typer.Argument(help="what to train: noise2score")],
    output: Annotated[Path, typer.Option("--out", dir_okay=False, help="the safetensors checkpoint to write "
                                         "(settings already in it are kept)")],
    images: Annotated[Path | None, typer.Option(exists=True, file_okay=False,
                                                help="a folder of NOISY PNG images to learn from (self-supervised); "
                                                "default: noisy copies of the photographs bundled with scikit-image "
                                                "that no skimage test set uses")] = None,
    noise: Annotated[list[str] | None, typer.Option(help="a setting to train, e.g. gauss25 or poisson0.01 "
                                                    "(repeatable; default: the protocol's six)")] = None,
    steps: Annotated[int, typer.Option(min=1, help="Adam steps per setting")] = 1000,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    width: Annotated[int, typer.Option(min=2, help="channels of the score network's first level")] = 16,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
) -> None:
    """Train a reference denoiser: Noise2Score score networks with the AR-DAE loss, one per noise setting."""
    from runner.denoise.noise2score import PROTOCOL_SETTINGS, checkpoint_entries, train_noise2score

    if method != "noise2score":
        raise typer.BadParameter(f"{method!r}: the trainable reference method is noise2score", param_hint="METHOD")
    by_slug = {n.slug: n for n in PROTOCOL_SETTINGS}
    unknown = sorted(set(noise or []) - set(by_slug))
    if unknown:
        raise typer.BadParameter(f"{', '.join(unknown)}; known: {', '.join(by_slug)}", param_hint="--noise")
    settings = [by_slug[s] for s in noise] if noise else list(PROTOCOL_SETTINGS)
    if images is not None:
        from runner.denoise.datasets import read_png

        files = sorted(images.glob("*.png"))
        if not files:
            raise typer.BadParameter(f"no .png files in {images}", param_hint="--images")
        pictures, clean = {f.stem: read_png(f, 1) for f in files}, False
    else:
        from runner.denoise.datasets import training_images

        pictures, clean = training_images(channels=1), True
    for i, setting in enumerate(settings):
        train_noise2score(pictures, family=setting.family, level=setting.level, steps=steps, seed=seed + i,
                          out_path=output, clean=clean, width=width, threads=threads,
                          log=lambda line: err.print(line, highlight=False))
    trained = checkpoint_entries(output)
    out.print(f"{output}: {', '.join(sorted(trained))} ({output.stat().st_size:,} bytes)", highlight=False)


def main() -> None:  # pragma: no cover - `python -m runner.cli`
    app(prog_name="runner")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
