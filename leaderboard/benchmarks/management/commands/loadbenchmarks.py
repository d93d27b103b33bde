from django.core.management.base import BaseCommand

from leaderboard.benchmarks.services import catalogue_load


class Command(BaseCommand):
    help = "Create or update every benchmark and task of the catalogue (idempotent)."

    def handle(self, *args, **options):
        benchmarks, tasks = catalogue_load()
        self.stdout.write(self.style.SUCCESS(f"catalogue: {benchmarks} benchmarks, {tasks} tasks"))
