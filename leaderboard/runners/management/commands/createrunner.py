from django.core.management.base import BaseCommand, CommandError

from leaderboard.runners.models import RegistrationCode, RunnerNode


class Command(BaseCommand):
    help = "Register a runner node and print its token (shown once), or rotate an existing one's."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--pool", action="append", dest="pools", default=None,
                            help="pool it serves (repeatable): cpu, gpu, ...")
        parser.add_argument("--rotate", action="store_true", help="issue a new token for an existing node")
        parser.add_argument("--code", action="store_true",
                            help="print a one-time registration code for `runner register` instead of a token")

    def handle(self, *args, name, pools, rotate, code, **options):
        if code:
            _, raw = RegistrationCode.issue(pools=pools or ["cpu"], note=name)
            self.stdout.write(raw)
            return
        node = RunnerNode.objects.filter(name=name).first()
        if node and not rotate:
            raise CommandError(f"runner {name!r} exists; use --rotate to issue a new token")
        if node:
            raw = node.rotate_token()
        else:
            node, raw = RunnerNode.register(name=name, pools=pools or ["cpu"])
        self.stdout.write(raw)
