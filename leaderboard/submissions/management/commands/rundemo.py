"""`make demo`: the platform on its embedded defaults — SQLite, the filesystem broker, a site
worker, beat, and one local runner serving every pool on the CPU — with the reference baselines
submitted, then fake copies of the datasets that cannot be downloaded here and small models trained
on synthetic images for the CIFAR and ImageNet boards. Ctrl-C, SIGTERM or SIGHUP stops everything;
if this process is killed outright, the kernel kills its children (leaderboard/submissions/supervisor.py)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from leaderboard.runners.models import RunnerNode
from leaderboard.submissions.supervisor import Stopped, Supervisor, die_with_parent, stop_on_signals
from runner.catalogue import CATALOGUE

DEMO_USER, DEMO_PASSWORD = "demo", "demo-password"
TRANSFORMER_DEMO = ("--optimizer", "adam.py", "--optimizer", "sgdm.py", "--optimizer", "clip_sgd.py")
# Every pool a catalogue task is queued on; the demo's one runner serves them all on the CPU.
POOLS = sorted({task.pool for bench in CATALOGUE for task in bench.tasks})
# The boards in the order the runner fills them, with the minutes from `make demo` measured on two
# cores shared with other work (load 2-3; README "make demo"). The runner takes its two queues in
# turn, so the gpu-pool classifier boards fill beside the cpu-pool ones.
FILL_ORDER = (
    ("CIFAR-10 and CIFAR-10-C (synthetic data)", "cifar10", "2 min"),
    ("optimizers on diffGrad's synthetic functions", "opt-synthetic", "2-3 min"),
    ("digits classifiers", "digits", "2-3 min"),
    ("CIFAR-100 and CIFAR-100-C (synthetic data)", "cifar100", "2-3 min"),
    ("ImageNet val, A, R, C, GeoDE, Dollar Street (synthetic data)", "imagenet", "4-5 min"),
    ("denoisers on bundled photographs, grey", "denoise-skimage-gray", "9 min"),
    ("denoisers on bundled photographs, colour", "denoise-skimage-color", "19 min"),
    ("optimizers training a digits CNN", "opt-digits", "26 min"),
    # The seed methods (TrAct, clipping, L-BFGS, the EL2N and GraNd diets, AdAdaGrad(Norm)) queue
    # after the reference optimizers; AdAdaGrad's per-sample gradients take ~5 min a job here.
    ("seed methods on the digits CNN", "opt-digits", "about 45 min"),
    ("Adam, SGD and clipped SGD training a byte-level transformer", "opt-text-transformer", "about 100 min"),
)


def site_broker_url() -> str:
    """The site's broker as a URL another process can be handed. The filesystem broker's settings
    keep its folder in the transport options (the URL is a bare ``filesystem://``), so its URL is
    rebuilt with the folder; any other broker's URL is the setting itself."""
    url = settings.CELERY_BROKER_URL
    if url.rstrip("/") == "filesystem:":
        return f"filesystem://{Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS['data_folder_in']).parent}"
    return url


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
    help = ("Run the whole platform locally: web, site worker with beat, one runner for every pool, "
            "baselines submitted (classifiers on labelled synthetic data where real data is absent).")

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
        parser.add_argument("--no-baselines", action="store_true")

    def handle(self, *args, port, no_baselines, **options):
        die_with_parent(signal.SIGTERM)  # `make` killed (closed terminal, kill -9): stop in order
        supervisor = Supervisor()
        try:
            with stop_on_signals():
                self._run(supervisor, port=port, no_baselines=no_baselines)
        except (KeyboardInterrupt, Stopped) as stop:
            self.stdout.write(f"stopping ({'SIGINT' if isinstance(stop, KeyboardInterrupt) else stop})…")
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, signal.SIG_IGN)  # a second signal must not cut the stop short
            supervisor.stop()

    def _run(self, supervisor: Supervisor, *, port: int, no_baselines: bool) -> None:
        call_command("migrate", verbosity=0)
        call_command("loadbenchmarks")
        token = self._accounts()
        if not no_baselines:
            call_command("seed_baselines", "--benchmark", "opt-synthetic", "--benchmark", "digits")

        wanted, port = port, _free_port(port)
        if port != wanted:
            self.stderr.write(self.style.WARNING(f"port {wanted} is in use; serving on {port} instead"))
        url = f"http://127.0.0.1:{port}"
        var = Path(settings.VAR_DIR)
        data_root = var / "data"
        data_root.mkdir(parents=True, exist_ok=True)
        bindir = Path(sys.executable).parent
        env = {**os.environ, "DEBUG": os.environ.get("DEBUG", "1"), "PYTHONUNBUFFERED": "1"}
        # The runner's secrets and wiring travel in its environment, never on a command line `ps`
        # shows; its broker is the site's own, not one derived from where the package lives.
        runner_env = {**env, "RUNNER_TOKEN": token, "CELERY_BROKER_URL": site_broker_url()}
        runner_cmd = [str(bindir / "runner"), "work", "--server", url, *[f"--pool={p}" for p in POOLS],
                      "--device", "cpu", "--data-root", str(data_root)]
        if not shutil.which("bwrap"):
            self.stderr.write(self.style.WARNING(
                "bubblewrap (bwrap) is not installed: the demo runner runs submissions WITHOUT a sandbox "
                "(--trust). Install the 'bubblewrap' package for isolation."))
            runner_cmd.append("--trust")
        supervisor.start("web", [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
                         env=env)
        # Beat in its own process, not embedded (-B): an embedded beat does not die with a killed worker.
        # Workers that crash are started again (up to ten times, loudly): the database holds every job's
        # state and the reaper re-sends lost wake-ups, so a restart loses nothing.
        supervisor.start("site-worker", [str(bindir / "celery"), "-A", "leaderboard", "worker", "-Q", "site",
                                         "--concurrency", "1", "--loglevel", "INFO"], env=env, restarts=10)
        supervisor.start("beat", [str(bindir / "celery"), "-A", "leaderboard", "beat", "--loglevel", "INFO",
                                  "-s", str(var / "celerybeat-schedule")], env=env, restarts=10)
        supervisor.start("runner", runner_cmd, env=runner_env, restarts=10)
        models = var / "demo-classifiers"
        if not no_baselines:
            # Fake copies of the classifier datasets absent here, and models trained on synthetic
            # images for their boards: a minute or two, while the runner starts on the boards above.
            supervisor.start("classifier-build", [sys.executable, "-m", "runner.baselines.classifiers.demo",
                                                  "--data-root", str(data_root), "--out", str(models)],
                             env=env, one_shot=True)
        time.sleep(2)
        self._banner(url, pools=POOLS, baselines=not no_baselines)
        seeded = no_baselines
        while True:
            for name, code in supervisor.restart_exited():
                self.stderr.write(self.style.WARNING(f"{name} exited with {code}; started it again "
                                                     f"({supervisor.restarts_left[name]} restarts left)"))
            if supervisor.exited():
                break
            build = supervisor.procs.get("classifier-build")
            if not seeded and build is not None and build.poll() is not None:
                seeded = True
                self._seed_after_build(build.returncode, models)
            time.sleep(1)
        self.stderr.write(self.style.ERROR(f"{', '.join(supervisor.exited())} exited; stopping the demo"))

    def _accounts(self) -> str:
        """The demo and admin users, and the local runner's node (every pool); returns its token."""
        user_model = get_user_model()
        demo, _ = user_model.objects.get_or_create(username=DEMO_USER, defaults={"email": "demo@example.org"})
        demo.set_password(DEMO_PASSWORD)
        demo.save()
        admin, _ = user_model.objects.get_or_create(username="admin", defaults={"is_staff": True, "is_superuser": True})
        admin.set_password("admin-password")
        admin.save()
        node = RunnerNode.objects.filter(name="local-runner").first()
        if node is None:
            return RunnerNode.register(name="local-runner", pools=POOLS)[1]
        if node.pools != POOLS:
            node.pools = POOLS
            node.save(update_fields=["pools"])
        return node.rotate_token()

    def _seed_after_build(self, returncode: int, models: Path) -> None:
        """Submit the demo classifiers (if they were built), then the slower boards' baselines."""
        if returncode == 0:
            call_command("seed_baselines", "--manifest", str(models / "baselines.json"))
            self.stdout.write(self.style.SUCCESS(
                "demo classifiers submitted: the CIFAR and ImageNet boards fill on fake data, labelled synthetic"))
        else:
            self.stderr.write(self.style.ERROR(
                f"the demo classifiers could not be built (exit {returncode}); the CIFAR and ImageNet boards "
                "stay empty. Run `python -m runner.baselines.classifiers.demo --data-root var/data --out "
                "var/demo-classifiers` to see why."))
        call_command("seed_baselines", "--benchmark", "denoise-skimage-gray", "--benchmark",
                     "denoise-skimage-color", "--benchmark", "opt-digits")
        # The transformer's three seeds take 10-25 minutes a job on two busy cores: the demo runs
        # the clipping claim's trio (PROTOCOLS "Coordinate-wise clipping") and leaves the rest.
        call_command("seed_baselines", "--benchmark", "opt-text-transformer", *TRANSFORMER_DEMO)

    def _banner(self, url: str, *, pools: list[str], baselines: bool) -> None:
        lines = [
            f"\nThe platform is running at {url}/",
            f"  log in as {DEMO_USER} / {DEMO_PASSWORD} (admin: admin / admin-password, {url}/admin/)",
            f"  one local runner serves the pools {', '.join(pools)} on the CPU",
        ]
        if baselines:
            lines.append("  the runner fills the boards in this order (minutes from now, measured on two busy cores):")
            width = max(len(title) for title, _, _ in FILL_ORDER)
            lines += [f"    {title:<{width}}  {url}/b/{slug}/  ({when})" for title, slug, when in FILL_ORDER]
            lines.append(f"  hardest images and data diet of the digits classifiers: {url}/b/digits/hardest/digits/ "
                         "(each classifier's submission page links its failure explorer)")
            lines.append("  CIFAR and ImageNet run on small fake copies written into var/data and on models "
                         "trained there on synthetic images: every such result is labelled \"synthetic data\".")
        lines.append("  Ctrl-C stops everything.\n")
        self.stdout.write(self.style.SUCCESS("\n".join(lines)))
