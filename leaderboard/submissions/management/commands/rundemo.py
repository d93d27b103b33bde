"""`make demo`: the platform on its embedded defaults — SQLite, the filesystem broker, a local
runner — with the reference baselines submitted. Ctrl-C stops everything."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from leaderboard.runners.models import RunnerNode

DEMO_USER, DEMO_PASSWORD = "demo", "demo-password"


def _free_port(preferred: int) -> int:
    for port in [preferred, *range(preferred + 1, preferred + 50)]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


class Command(BaseCommand):
    help = "Run the whole platform locally: web, site worker with beat, one runner, baselines submitted."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
        parser.add_argument("--no-baselines", action="store_true")

    def handle(self, *args, port, no_baselines, **options):
        call_command("migrate", verbosity=0)
        call_command("loadbenchmarks")
        user_model = get_user_model()
        demo, _ = user_model.objects.get_or_create(username=DEMO_USER, defaults={"email": "demo@example.org"})
        demo.set_password(DEMO_PASSWORD)
        demo.save()
        admin, _ = user_model.objects.get_or_create(username="admin", defaults={"is_staff": True, "is_superuser": True})
        admin.set_password("admin-password")
        admin.save()
        node = RunnerNode.objects.filter(name="local-runner").first()
        token = node.rotate_token() if node else RunnerNode.register(name="local-runner", pools=["cpu"])[1]
        if not no_baselines:
            call_command("seed_baselines")

        port = _free_port(port)
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "DEBUG": os.environ.get("DEBUG", "1"), "PYTHONUNBUFFERED": "1"}
        bindir = Path(sys.executable).parent
        data_root = Path(settings.VAR_DIR) / "data"
        data_root.mkdir(parents=True, exist_ok=True)
        runner_cmd = [str(bindir / "runner"), "work", "--server", url, "--token", token, "--pool", "cpu",
                      "--data-root", str(data_root)]
        if not shutil.which("bwrap"):
            self.stderr.write(self.style.WARNING(
                "bubblewrap (bwrap) is not installed: the demo runner runs submissions WITHOUT a sandbox "
                "(--trust). Install the 'bubblewrap' package for isolation."))
            runner_cmd.append("--trust")
        commands = {
            "web": [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            "site-worker": [str(bindir / "celery"), "-A", "leaderboard", "worker", "-B", "-Q", "site",
                            "--concurrency", "1", "--loglevel", "INFO",
                            "-s", str(Path(settings.VAR_DIR) / "celerybeat-schedule")],
            "runner": runner_cmd,
        }
        procs: dict[str, subprocess.Popen] = {}
        try:
            for name, cmd in commands.items():
                procs[name] = subprocess.Popen(cmd, env=env, start_new_session=True)
            time.sleep(2)
            self.stdout.write(self.style.SUCCESS(
                f"\nThe platform is running at {url}/\n"
                f"  log in as {DEMO_USER} / {DEMO_PASSWORD} (admin: admin / admin-password, {url}/admin/)\n"
                "  the local runner works through the reference baselines, quickest boards first:\n"
                f"    optimizers on synthetic functions  {url}/b/opt-synthetic/   (a minute)\n"
                f"    denoisers on bundled photographs   {url}/b/denoise-skimage-gray/ and "
                f"{url}/b/denoise-skimage-color/   (about 6 minutes)\n"
                f"    digits classifiers                 {url}/b/digits/\n"
                f"    optimizers training a digits CNN   {url}/b/opt-digits/   (the slowest)\n"
                "  Ctrl-C stops everything.\n"))
            while all(p.poll() is None for p in procs.values()):
                time.sleep(1)
            dead = [n for n, p in procs.items() if p.poll() is not None]
            self.stderr.write(self.style.ERROR(f"{', '.join(dead)} exited; stopping the demo"))
        except KeyboardInterrupt:
            self.stdout.write("stopping…")
        finally:
            for p in procs.values():
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGTERM)
            deadline = time.time() + 10
            for p in procs.values():
                try:
                    p.wait(max(0.1, deadline - time.time()))
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
