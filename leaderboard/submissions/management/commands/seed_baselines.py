"""Submit the reference methods as ordinary submissions flagged as baselines: the optimizers
(runner/baselines/optimizers/), the digits classifiers (runner/baselines/classifiers/) and the
denoisers (runner/baselines/denoisers/); with ``--manifest``, the classifiers a manifest lists
(the demo's models trained on synthetic images: runner/baselines/classifiers/demo.py). Idempotent:
a baseline already submitted to a benchmark is left alone. The default order is the order the
demo's single runner works through them: the quick boards first."""
from __future__ import annotations

import json
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management.base import BaseCommand, CommandError

import runner
from leaderboard.benchmarks.models import Benchmark
from leaderboard.submissions.models import Submission
from leaderboard.submissions.services import submission_create

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


class Command(BaseCommand):
    help = "Submit the reference optimizers, classifiers and denoisers as baselines (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--benchmark", action="append", dest="benchmarks",
                            help="benchmark slug (repeatable); default: every board that needs no "
                                 "download (opt-synthetic, the skimage denoising boards, digits, opt-digits)")
        parser.add_argument("--manifest", type=Path,
                            help="a classifier manifest (baselines.json schema) whose models to submit "
                                 "instead, e.g. the demo's (runner/baselines/classifiers/demo.py)")

    def handle(self, *args, benchmarks, manifest=None, **options):
        owner, _ = get_user_model().objects.get_or_create(username=BASELINE_OWNER)
        if manifest is not None:
            if not manifest.is_file():
                raise CommandError(f"no manifest at {manifest}")
            only = [self._benchmark(slug) for slug in benchmarks or []]
            created = sum(self._seed_classifiers(owner, only=bench, manifest=manifest) for bench in only) \
                if only else self._seed_classifiers(owner, manifest=manifest)
        elif benchmarks:
            created = 0
            for slug in benchmarks:
                bench = self._benchmark(slug)
                if bench.kind == Benchmark.Kind.OPTIMIZER:
                    created += self._seed_optimizers(owner, bench)
                elif bench.kind == Benchmark.Kind.DENOISER:
                    created += self._seed_denoisers(owner, bench)
                else:
                    created += self._seed_classifiers(owner, only=bench)
        else:
            created = self._seed_optimizers(owner, self._benchmark("opt-synthetic"))
            for slug in DENOISING_BOARDS:
                created += self._seed_denoisers(owner, self._benchmark(slug))
            created += self._seed_classifiers(owner)
            created += self._seed_optimizers(owner, self._benchmark("opt-digits"))
        self.stdout.write(self.style.SUCCESS(f"baselines: {created} submitted"))

    @staticmethod
    def _benchmark(slug: str) -> Benchmark:
        bench = Benchmark.objects.filter(slug=slug).first()
        if bench is None:
            raise CommandError(f"no benchmark {slug!r}; run loadbenchmarks first")
        return bench

    @staticmethod
    def _exists(bench: Benchmark, name: str) -> bool:
        return Submission.objects.filter(benchmark=bench, is_baseline=True, name=name).exists()

    def _seed_optimizers(self, owner, bench: Benchmark) -> int:
        manifest = json.loads((BASELINES_DIR / "baselines.json").read_text())
        entries = manifest["baselines"] if isinstance(manifest, dict) else manifest
        created = 0
        for entry in entries:
            name = entry.get("name") or entry["display_name"]
            if self._exists(bench, name):
                continue
            source = (BASELINES_DIR / entry["file"]).read_bytes()
            hparams = entry.get("hparams_by_benchmark", {}).get(bench.slug, entry.get("hparams", {}))
            submission_create(
                owner=owner, benchmark=bench, name=name,
                upload=SimpleUploadedFile(entry["file"], source, content_type="text/x-python"),
                hparams=hparams, description=entry.get("description", ""),
                model_family=entry.get("family", "reference optimizer"), is_baseline=True,
            )
            created += 1
        return created

    def _seed_denoisers(self, owner, bench: Benchmark) -> int:
        """The five reference denoisers, from the noisy input up to BM3D."""
        manifest = json.loads((DENOISERS_DIR / "baselines.json").read_text())
        created = 0
        for key in ("identity", "gaussian-filter", "median-filter", "noise2score", "bm3d"):
            entry = manifest[key]
            if self._exists(bench, entry["title"]):
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

    def _seed_classifiers(self, owner, only: Benchmark | None = None,
                          manifest: Path = CLASSIFIERS_DIR / "baselines.json") -> int:
        """The classifiers a manifest lists, in its order; by default the small ones trained here for
        the digits board (TorchScript and ONNX). Files are read beside the manifest."""
        folder = manifest.parent
        created = 0
        for entry in json.loads(manifest.read_text(encoding="utf-8"))["baselines"]:
            if only is not None and entry["benchmark"] != only.slug:
                continue
            bench = self._benchmark(entry["benchmark"])
            if self._exists(bench, entry["name"]):
                continue
            submission_create(
                owner=owner, benchmark=bench, name=entry["name"],
                upload=SimpleUploadedFile(entry["file"], (folder / entry["file"]).read_bytes()),
                hparams=entry.get("hparams", {}), description=entry.get("description", ""),
                model_family=entry.get("family", "reference classifier"), is_baseline=True,
            )
            created += 1
        return created
