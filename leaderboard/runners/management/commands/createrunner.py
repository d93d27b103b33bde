from django.core.management.base import BaseCommand, CommandError

from leaderboard.runners.models import RunnerNode


class Command(BaseCommand):
    help = "Register a runner node and print its token (shown once), or rotate an existing one's."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--pool", action="append", dest="pools", default=None,
                            help="pool it serves (repeatable): cpu, gpu, ...")
        parser.add_argument("--rotate", action="store_true", help="issue a new token for an existing node")

    def handle(self, *args, name, pools, rotate, **options):
        node = RunnerNode.objects.filter(name=name).first()
        if node and not rotate:
            raise CommandError(f"runner {name!r} exists; use --rotate to issue a new token")
        if node:
            raw = node.rotate_token()
        else:
            node, raw = RunnerNode.register(name=name, pools=pools or ["cpu"])
        self.stdout.write(raw)
