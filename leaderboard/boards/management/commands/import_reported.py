from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from leaderboard.boards.reported import BadReportedFile, import_claims, parse_claims


class Command(BaseCommand):
    help = ("Import published claims (reported results) from a JSON file: a list of "
            "{benchmark, task?, model, paper, source, metrics}; see leaderboard/boards/reported.py. "
            "They are shown apart from verified results and never ranked with them unless a reader asks.")

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)

    def handle(self, *args, **options):
        try:
            claims = parse_claims(options["file"])
        except BadReportedFile as exc:
            raise CommandError(str(exc)) from None
        created, updated = import_claims(claims)
        self.stdout.write(self.style.SUCCESS(f"reported results: {created} imported, {updated} updated"))
