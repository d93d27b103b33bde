"""Submit the reference methods as baselines: an adapter for
leaderboard.submissions.baselines.baselines_seed (which says what is seeded, from which manifests,
and in which order). Idempotent."""
from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from leaderboard.submissions.baselines import BaselineSeedError, baselines_seed


class Command(BaseCommand):
    help = "Submit the reference optimizers, classifiers and denoisers as baselines (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--benchmark", action="append", dest="benchmarks",
                            help="benchmark slug (repeatable); default: every board that needs no "
                                 "download (opt-synthetic, the skimage denoising boards, digits, opt-digits)")
        parser.add_argument("--optimizer", action="append", dest="optimizer_files", default=[],
                            help="an optimizer baseline's file, e.g. adam.py (repeatable): seed only these "
                                 "on the optimizer boards named")
        parser.add_argument("--manifest", type=Path,
                            help="a classifier manifest (baselines.json schema) whose models to submit "
                                 "instead, e.g. the demo's (runner/baselines/classifiers/demo.py)")

    def handle(self, *args, benchmarks, manifest=None, optimizer_files=(), **options):
        try:
            created = baselines_seed(benchmarks=benchmarks or (), manifest=manifest, optimizer_files=optimizer_files)
        except BaselineSeedError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"baselines: {created} submitted"))
