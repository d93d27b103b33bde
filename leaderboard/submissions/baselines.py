"""Seeding the reference methods as ordinary submissions flagged as baselines, owned by the user
"baselines": the optimizers (runner/baselines/optimizers/), the digits classifiers
(runner/baselines/classifiers/) and the denoisers (runner/baselines/denoisers/), or the
classifiers a manifest lists (the demo's models trained on synthetic images:
runner/baselines/classifiers/demo.py). `manage.py seed_baselines` is its adapter.

Each folder's baselines.json has its own shape:
- optimizers: a list of entries (or {"baselines": [...]}) with "file", "name" (or
  "display_name"), "hparams" and per-board "hparams_by_benchmark", "description", "family"; an
  entry is seeded only on the boards its "hparams_by_benchmark" lists (a slug there that is no
  loaded board is never reached: seeding goes board by board);
- denoisers: an object keyed by method ("identity", "gaussian-filter", ...), each with "file"
  and "title";
- classifiers (and the demo's manifests): {"baselines": [...]} with "file", "name",
  "benchmark", "hparams", "description", "family"; files are read beside the manifest."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile

import runner
from leaderboard.benchmarks.models import Benchmark

from .models import Submission
from .services import submission_create

if TYPE_CHECKING:
    from django.contrib.auth.models import User

BASELINES_DIR = Path(runner.__file__).parent / "baselines" / "optimizers"
CLASSIFIERS_DIR = Path(runner.__file__).parent / "baselines" / "classifiers"
DENOISERS_DIR = Path(runner.__file__).parent / "baselines" / "denoisers"
# The denoising boards that need no download (scikit-image's bundled photographs).
DENOISING_BOARDS = ("denoise-skimage-gray", "denoise-skimage-color")
DENOISER_DESCRIPTIONS = {
    "identity": "The noisy input itself: the floor every denoiser must beat.",
    "gaussian-filter": "A Gaussian blur whose width per noise setting was tuned on training photographs "
                       "(never on a test set).",
    "median-filter": "A median filter whose window per noise setting was tuned on training photographs.",
    "bm3d": "BM3D (the bm3d package, Mäkitalo & Foi), through the Anscombe transform for Poisson noise and "
            "the log transform for Gamma noise. Run by the runner itself as trusted reference code.",
    "noise2score": "Noise2Score (Kim & Ye, 2021): score networks trained here with the AR-DAE loss on noisy "
                   "copies of bundled photographs no test set uses, Tweedie's formula per noise family. "
                   "A small CPU checkpoint, not the paper's.",
}
BASELINE_OWNER = "baselines"


class BaselineSeedError(Exception):
    """An unknown benchmark slug or a missing manifest; ``str(exc)`` says which, for the operator."""


def baselines_seed(*, benchmarks: Sequence[str] = (), manifest: Path | None = None,
                   optimizer_files: Sequence[str] = ()) -> int:
    """Submit the reference methods as baselines (submission_create with ``is_baseline``; each is
    validated and dispatched once the caller's transaction commits) and return how many were
    submitted. Idempotent: a baseline already submitted to a benchmark under its name is left
    alone.

    - ``manifest``: the classifiers that manifest lists (only those of ``benchmarks`` when given);
    - else ``benchmarks`` (slugs): every reference method of each board's kind (optimizers: those
      whose manifest entry lists the board);
    - ``optimizer_files`` (file names of runner/baselines/optimizers/baselines.json, say
      ``adam.py``): only those optimizers (the demo's subset of a slow board); an unknown name
      raises BaselineSeedError;
    - else every board that needs no download, in the order the demo's single runner works
      through them, the quick boards first: opt-synthetic, the skimage denoising boards, digits,
      opt-digits.

    Raises BaselineSeedError for an unknown slug or a manifest that is not a file; the
    ValidationError of submission_create when a shipped file breaks the upload rules."""
    owner, _ = get_user_model().objects.get_or_create(username=BASELINE_OWNER)
    unknown = set(optimizer_files) - {entry["file"] for entry in optimizer_manifest()}
    if unknown:
        raise BaselineSeedError(f"no optimizer baseline file {', '.join(sorted(unknown))}; the manifest lists "
                                f"{', '.join(entry['file'] for entry in optimizer_manifest())}")
    if manifest is not None:
        if not manifest.is_file():
            raise BaselineSeedError(f"no manifest at {manifest}")
        only = [_benchmark(slug) for slug in benchmarks]
        if only:
            return sum(_seed_classifiers(owner, only=bench, manifest=manifest) for bench in only)
        return _seed_classifiers(owner, manifest=manifest)
    if benchmarks:
        created = 0
        for slug in benchmarks:
            bench = _benchmark(slug)
            if bench.kind == Benchmark.Kind.OPTIMIZER:
                created += _seed_optimizers(owner, bench, optimizer_files)
            elif bench.kind == Benchmark.Kind.DENOISER:
                created += _seed_denoisers(owner, bench)
            else:
                created += _seed_classifiers(owner, only=bench)
        return created
    created = _seed_optimizers(owner, _benchmark("opt-synthetic"))
    for slug in DENOISING_BOARDS:
        created += _seed_denoisers(owner, _benchmark(slug))
    created += _seed_classifiers(owner)
    created += _seed_optimizers(owner, _benchmark("opt-digits"))
    return created


def _benchmark(slug: str) -> Benchmark:
    bench = Benchmark.objects.filter(slug=slug).first()
    if bench is None:
        raise BaselineSeedError(f"no benchmark {slug!r}; run loadbenchmarks first")
    return bench


def _exists(bench: Benchmark, name: str) -> bool:
    return Submission.objects.filter(benchmark=bench, is_baseline=True, name=name).exists()


def optimizer_manifest() -> list[dict]:
    """The entries of runner/baselines/optimizers/baselines.json (a list, or {"baselines": [...]})."""
    manifest = json.loads((BASELINES_DIR / "baselines.json").read_text(encoding="utf-8"))
    return manifest["baselines"] if isinstance(manifest, dict) else manifest


def optimizer_settings(entry: dict, slug: str) -> dict | None:
    """An optimizer entry's hyperparameters on the board ``slug``, or None when it is not seeded
    there: an entry with ``hparams_by_benchmark`` applies only to the boards it lists (the seed
    methods that need the runner's hooks, say, only to the CPU training boards); one without
    applies everywhere with its ``hparams``."""
    by_board = entry.get("hparams_by_benchmark")
    if by_board is None:
        return dict(entry.get("hparams", {}))
    return dict(by_board[slug]) if slug in by_board else None


def _seed_optimizers(owner: User, bench: Benchmark, files: Sequence[str] = ()) -> int:
    """Every optimizer of the manifest that lists this board (only ``files`` when given), with
    its settings for it."""
    created = 0
    for entry in optimizer_manifest():
        if files and entry["file"] not in files:
            continue
        hparams = optimizer_settings(entry, bench.slug)
        name = entry.get("name") or entry["display_name"]
        if hparams is None or _exists(bench, name):
            continue
        source = (BASELINES_DIR / entry["file"]).read_bytes()
        submission_create(
            owner=owner, benchmark=bench, name=name,
            upload=SimpleUploadedFile(entry["file"], source, content_type="text/x-python"),
            hparams=hparams, description=entry.get("description", ""),
            model_family=entry.get("family", "reference optimizer"), is_baseline=True,
        )
        created += 1
    return created


def _seed_denoisers(owner: User, bench: Benchmark) -> int:
    """The five reference denoisers, from the noisy input up to BM3D."""
    manifest = json.loads((DENOISERS_DIR / "baselines.json").read_text())
    created = 0
    for key in ("identity", "gaussian-filter", "median-filter", "noise2score", "bm3d"):
        entry = manifest[key]
        if _exists(bench, entry["title"]):
            continue
        submission_create(
            owner=owner, benchmark=bench, name=entry["title"],
            upload=SimpleUploadedFile(entry["file"], (DENOISERS_DIR / entry["file"]).read_bytes()),
            hparams={}, description=DENOISER_DESCRIPTIONS.get(key, ""),
            model_family="classical filter" if key in ("identity", "gaussian-filter", "median-filter")
            else "BM3D" if key == "bm3d" else "score-based (Noise2Score)",
            is_baseline=True,
        )
        created += 1
    return created


def _seed_classifiers(owner: User, only: Benchmark | None = None,
                      manifest: Path = CLASSIFIERS_DIR / "baselines.json") -> int:
    """The classifiers a manifest lists, in its order; by default the small ones trained here for
    the digits board (TorchScript and ONNX). Files are read beside the manifest."""
    folder = manifest.parent
    created = 0
    for entry in json.loads(manifest.read_text(encoding="utf-8"))["baselines"]:
        if only is not None and entry["benchmark"] != only.slug:
            continue
        bench = _benchmark(entry["benchmark"])
        if _exists(bench, entry["name"]):
            continue
        submission_create(
            owner=owner, benchmark=bench, name=entry["name"],
            upload=SimpleUploadedFile(entry["file"], (folder / entry["file"]).read_bytes()),
            hparams=entry.get("hparams", {}), description=entry.get("description", ""),
            model_family=entry.get("family", "reference classifier"), is_baseline=True,
        )
        created += 1
    return created
