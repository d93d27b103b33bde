"""`runner architectures [--out FILE] [--check]`: the allow-list of library architectures a
.safetensors submission may name, from the installed torchvision and timm (the site, which never
imports torch, reads the shipped copy: runner/architectures.py)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from runner.architectures import ARCHITECTURES_FILE
from runner.cli.common import err, out


def installed_document() -> dict[str, Any]:
    """The allow-list document of the installed libraries: ``{"generated_by", "libraries":
    {library: {"version", "classifiers": [sorted names]}}}``."""
    import timm
    import torchvision

    from runner.sandboxed.library_models import installed_architectures

    names = installed_architectures()
    versions = {"torchvision": torchvision.__version__.split("+")[0], "timm": timm.__version__.split("+")[0]}  # no local build tag (+cu130)
    return {
        "generated_by": "runner architectures --out runner/data_files/architectures.json",
        "libraries": {lib: {"version": versions[lib], "classifiers": names[lib]} for lib in sorted(names)},
    }


def architectures(
    output: Annotated[Path, typer.Option("--out", dir_okay=False, help="where to write the list")] = ARCHITECTURES_FILE,
    check: Annotated[bool, typer.Option("--check", help="only compare the file with the installed libraries; "
                                        "exit 1 when they differ")] = False,
) -> None:
    """The classifier architectures of the installed torchvision and timm, as the site's allow-list."""
    doc = installed_document()
    text = json.dumps(doc, indent=1) + "\n"
    if check:
        current = output.read_text() if output.is_file() else ""
        if current != text:
            err.print(f"{output} does not match the installed libraries; run `runner architectures` to rewrite it")
            raise typer.Exit(1)
        out.print(f"{output} matches the installed libraries")
        return
    output.write_text(text)
    counts = ", ".join(f"{lib} {d['version']}: {len(d['classifiers'])}" for lib, d in doc["libraries"].items())
    out.print(f"wrote {output} ({counts})", highlight=False)
