"""Submit the reference optimizers (runner/baselines/optimizers/) as ordinary submissions flagged
as baselines. Idempotent: a baseline already submitted to a benchmark is left alone."""
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
BASELINE_OWNER = "baselines"


class Command(BaseCommand):
    help = "Submit the reference optimizers as baselines (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--benchmark", action="append", dest="benchmarks",
                            help="benchmark slug (repeatable); default: opt-synthetic and opt-digits, "
                                 "the optimizer boards that need no download")

    def handle(self, *args, benchmarks, **options):
        manifest = json.loads((BASELINES_DIR / "baselines.json").read_text())
        entries = manifest["baselines"] if isinstance(manifest, dict) else manifest
        owner, _ = get_user_model().objects.get_or_create(username=BASELINE_OWNER)
        created = 0
        for slug in benchmarks or ["opt-synthetic", "opt-digits"]:
            bench = Benchmark.objects.filter(slug=slug, kind=Benchmark.Kind.OPTIMIZER).first()
            if bench is None:
                raise CommandError(f"no optimizer benchmark {slug!r}; run loadbenchmarks first")
            for entry in entries:
                name = entry.get("name") or entry["display_name"]
                if Submission.objects.filter(benchmark=bench, is_baseline=True, name=name).exists():
                    continue
                source = (BASELINES_DIR / entry["file"]).read_bytes()
                hparams = entry.get("hparams_by_benchmark", {}).get(slug, entry.get("hparams", {}))
                submission_create(
                    owner=owner, benchmark=bench, name=name,
                    upload=SimpleUploadedFile(entry["file"], source, content_type="text/x-python"),
                    hparams=hparams, description=entry.get("description", ""),
                    model_family=entry.get("family", "reference optimizer"), is_baseline=True,
                )
                created += 1
        if not benchmarks:
            created += self._seed_classifiers(owner)
        self.stdout.write(self.style.SUCCESS(f"baselines: {created} submitted"))

    def _seed_classifiers(self, owner) -> int:
        """The small classifiers trained here for the digits board (TorchScript and ONNX)."""
        manifest = json.loads((CLASSIFIERS_DIR / "baselines.json").read_text())
        created = 0
        for entry in manifest["baselines"]:
            bench = Benchmark.objects.get(slug=entry["benchmark"])
            if Submission.objects.filter(benchmark=bench, is_baseline=True, name=entry["name"]).exists():
                continue
            submission_create(
                owner=owner, benchmark=bench, name=entry["name"],
                upload=SimpleUploadedFile(entry["file"], (CLASSIFIERS_DIR / entry["file"]).read_bytes()),
                hparams=entry.get("hparams", {}), description=entry.get("description", ""),
                model_family=entry.get("family", "reference classifier"), is_baseline=True,
            )
            created += 1
        return created
