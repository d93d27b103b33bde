"""`runner baselines export | denoisers | train | claims`: reference models and the seed papers'
claims measured (the work lives in runner/baselines/classifiers/export.py, runner/denoise/ and
runner/baselines/claims.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runner.cli.common import err, out

app = typer.Typer(help="Reference models.", no_args_is_help=True)


@app.command("export")
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


@app.command("denoisers")
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


@app.command("train")
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
        from runner.datasets.denoise import read_png

        files = sorted(images.glob("*.png"))
        if not files:
            raise typer.BadParameter(f"no .png files in {images}", param_hint="--images")
        pictures, clean = {f.stem: read_png(f, 1) for f in files}, False
    else:
        from runner.datasets.denoise import training_images

        pictures, clean = training_images(channels=1), True
    for i, setting in enumerate(settings):
        train_noise2score(pictures, family=setting.family, level=setting.level, steps=steps, seed=seed + i,
                          out_path=output, clean=clean, width=width, threads=threads,
                          log=lambda line: err.print(line, highlight=False))
    trained = checkpoint_entries(output)
    out.print(f"{output}: {', '.join(sorted(trained))} ({output.stat().st_size:,} bytes)", highlight=False)


@app.command("claims")
def baselines_claims(
    output: Annotated[Path, typer.Option("--out", file_okay=False, help="the folder of result files (kept: "
                                         "a second call runs only what is missing)")] = Path("var/claims"),
    data_root: Annotated[Path | None, typer.Option(help="where datasets live (opt-digits and the text need none)")]
    = None,
    table_only: Annotated[bool, typer.Option("--table-only", help="print the table from the results already there")]
    = False,
    task: Annotated[list[str] | None, typer.Option(help="only the claims measured on this task (repeatable), "
                                                   "e.g. opt-text-transformer")] = None,
) -> None:
    """Measure the seed papers' claims on this platform's workloads (runner/baselines/claims.py):
    each method and its comparator through `runner run`, then the table of docs/benchmarks.md."""
    from runner.baselines import claims

    chosen = tuple(c for c in claims.CLAIMS if not task or c.task in task)
    if not chosen:
        tasks = sorted({c.task for c in claims.CLAIMS})
        raise typer.BadParameter(f"no claim is measured on {', '.join(task or [])}; the claims' tasks: "
                                 f"{', '.join(tasks)}", param_hint="--task")
    if not table_only:
        try:
            claims.measure(output, chosen, data_root=data_root, say=lambda line: err.print(line, highlight=False))
        except RuntimeError as exc:
            err.print(f"[red]a measurement failed[/red]: {exc}", highlight=False)
            raise typer.Exit(1) from exc
    try:
        found = claims.verdicts(output, chosen)
    except FileNotFoundError as exc:
        err.print(f"[red]missing result[/red] {exc.filename}: run without --table-only", highlight=False)
        raise typer.Exit(1) from exc
    out.print(claims.markdown(found), highlight=False, soft_wrap=True)
