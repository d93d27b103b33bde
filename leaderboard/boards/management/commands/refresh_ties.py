from django.core.management.base import BaseCommand, CommandError

from leaderboard.benchmarks.models import Benchmark
from leaderboard.boards.services import benchmark_ties_refresh


class Command(BaseCommand):
    help = (
        "Recompute the paired 'statistically tied' marks of every task of the named benchmarks now "
        "(the site worker does it after each result; run this after a broker outage lost those "
        "messages). Prints the rows the paired rule covered per task."
    )

    def add_arguments(self, parser):
        parser.add_argument("benchmarks", nargs="+", metavar="benchmark", help="benchmark slugs")

    def handle(self, *args, **options):
        known = {b.slug: b for b in Benchmark.objects.filter(slug__in=options["benchmarks"])}
        unknown = [slug for slug in options["benchmarks"] if slug not in known]
        if unknown:
            raise CommandError(
                f"no benchmark {', '.join(unknown)}; known: "
                f"{', '.join(Benchmark.objects.order_by('slug').values_list('slug', flat=True))}"
            )
        for slug in options["benchmarks"]:
            for task, covered in benchmark_ties_refresh(benchmark=known[slug]).items():
                self.stdout.write(f"{slug}/{task}: {covered} rows ranked by the paired test")
