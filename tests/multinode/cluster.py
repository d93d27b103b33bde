"""A small cluster on one machine, for the multi-node fault test: the site, PostgreSQL and Redis in
one network namespace, and each runner node in a network namespace of its own, joined to the site
by a veth pair (its own /30 on a test-only 10.201.x.0 network that exists only inside these
namespaces). Needs root and iproute2; every namespace and process is removed on exit."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SITE_NS = "lbtest-site"
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)


def sh(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, **kwargs)


class Cluster:
    def __init__(self, work: Path, n_nodes: int = 2):
        self.work = work
        self.nodes = [f"lbtest-node{i + 1}" for i in range(n_nodes)]
        self.procs: dict[str, subprocess.Popen] = {}
        self.pg_dir = work / "pg"
        self.pg_socket = work / "pgsock"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST"))},
            "DATABASE_URL": f"postgres://postgres@/leaderboard?host={self.pg_socket}",
            "CELERY_BROKER_URL": "redis://127.0.0.1:6390/0",
            "LEADERBOARD_VAR": str(work / "var"), "DEBUG": "0", "ALLOWED_HOSTS": "*",
            "SECRET_KEY": "multinode-test-" + "x" * 40, "JOB_LEASE_SECONDS": "6", "JOB_HEARTBEAT_SECONDS": "1",
            "REAPER_INTERVAL_SECONDS": "2", "JOB_DISPATCH_TIMEOUT_SECONDS": "30", "JOB_MAX_ATTEMPTS": "4",
            "PYTHONUNBUFFERED": "1",
        }

    # ------------------------------------------------------------------ network
    def site_address(self, i: int) -> str:
        return f"10.201.{i + 1}.1"

    def node_address(self, i: int) -> str:
        return f"10.201.{i + 1}.2"

    def up_network(self) -> None:
        self.down_network()
        sh("ip", "netns", "add", SITE_NS)
        sh("ip", "netns", "exec", SITE_NS, "ip", "link", "set", "lo", "up")
        for i, node in enumerate(self.nodes):
            sh("ip", "netns", "add", node)
            sh("ip", "netns", "exec", node, "ip", "link", "set", "lo", "up")
            a, b = f"lbs{i}", f"lbn{i}"
            sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
            sh("ip", "link", "set", a, "netns", SITE_NS)
            sh("ip", "link", "set", b, "netns", node)
            sh("ip", "netns", "exec", SITE_NS, "ip", "addr", "add", f"{self.site_address(i)}/30", "dev", a)
            sh("ip", "netns", "exec", SITE_NS, "ip", "link", "set", a, "up")
            sh("ip", "netns", "exec", node, "ip", "addr", "add", f"{self.node_address(i)}/30", "dev", b)
            sh("ip", "netns", "exec", node, "ip", "link", "set", b, "up")

    def down_network(self) -> None:
        for ns in [SITE_NS, *self.nodes]:
            sh("ip", "netns", "del", ns, check=False)

    # ---------------------------------------------------------------- processes
    def start(self, name: str, netns: str, argv: list[str], *, user: str | None = None, env=None) -> None:
        prefix = ["ip", "netns", "exec", netns]
        if user:
            prefix += ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]
        log = open(self.work / f"{name}.log", "a")
        self.procs[name] = subprocess.Popen(prefix + argv, cwd=ROOT, env=env or self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name, None)
        if proc and proc.poll() is None:
            os.killpg(proc.pid, sig)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def log(self, name: str) -> str:
        path = self.work / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def start_postgres(self) -> None:
        assert PG_BIN, "PostgreSQL server binaries are needed"
        for d in (self.pg_dir, self.pg_socket):
            d.mkdir(parents=True, exist_ok=True)
            shutil.chown(d, "postgres", "postgres")
        os.chmod(self.work, 0o755)
        sh("setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", str(PG_BIN / "initdb"), "-D",
           str(self.pg_dir), "-A", "trust", "-U", "postgres")
        self.start("postgres", SITE_NS, [str(PG_BIN / "postgres"), "-D", str(self.pg_dir), "-k", str(self.pg_socket),
                                         "-c", "listen_addresses=127.0.0.1", "-p", "5439"], user="postgres")
        self.env["DATABASE_URL"] = f"postgres://postgres@/leaderboard?host={self.pg_socket}&port=5439"
        self.wait(lambda: sh(str(PG_BIN / "pg_isready"), "-h", str(self.pg_socket), "-p", "5439",
                             check=False).returncode == 0, 30, "PostgreSQL")
        sh(str(PG_BIN / "createdb"), "-h", str(self.pg_socket), "-p", "5439", "-U", "postgres", "leaderboard")

    def start_broker(self) -> None:
        binds = ["127.0.0.1", *(self.site_address(i) for i in range(len(self.nodes)))]
        self.start("redis", SITE_NS, ["redis-server", "--port", "6390", "--bind", *binds, "--save", "",
                                      "--appendonly", "no", "--dir", str(self.work), "--protected-mode", "no"])
        self.wait(lambda: sh("ip", "netns", "exec", SITE_NS, "redis-cli", "-p", "6390", "ping",
                             check=False).stdout.strip() == "PONG", 20, "Redis")

    def redis_state(self) -> str:
        """Queue lengths and unacknowledged deliveries, for failure messages."""
        def cli(*args):
            return sh("ip", "netns", "exec", SITE_NS, "redis-cli", "-p", "6390", *args, check=False).stdout.strip()
        return f"runner.cpu={cli('LLEN', 'runner.cpu')} site={cli('LLEN', 'site')} unacked={cli('HLEN', 'unacked')} keys={cli('KEYS', '*')!r}"

    def manage(self, *args: str) -> str:
        return sh("ip", "netns", "exec", SITE_NS, str(BIN / "python"), "manage.py", *args, cwd=ROOT,
                  env=self.env).stdout

    def query(self, code: str) -> str:
        """Run Python with Django set up inside the site's namespace; returns its stdout."""
        return self.manage("shell", "-c", code).strip()

    def start_site(self) -> None:
        self.manage("migrate", "--noinput")
        self.start("web", SITE_NS, [str(BIN / "gunicorn"), "leaderboard.wsgi:application", "-b", "0.0.0.0:8000",
                                    "-w", "2", "--threads", "4", "-k", "gthread"])
        self.start("site-worker", SITE_NS, [str(BIN / "celery"), "-A", "leaderboard", "worker", "-B", "-Q", "site",
                                            "--concurrency", "1", "-s", str(self.work / "beat-schedule")])
        self.wait(lambda: sh("ip", "netns", "exec", SITE_NS, "curl", "-sf", "http://127.0.0.1:8000/healthz",
                             check=False).returncode == 0, 60, "the site")

    def start_runner(self, i: int) -> None:
        node = self.nodes[i]
        token = self.manage("createrunner", node, "--pool", "cpu").strip().splitlines()[-1]
        env = {k: v for k, v in self.env.items() if k not in ("DATABASE_URL",)}
        env.update(RUNNER_SERVER=f"http://{self.site_address(i)}:8000", RUNNER_TOKEN=token,
                   CELERY_BROKER_URL=f"redis://{self.site_address(i)}:6390/0", RUNNER_POOLS="cpu",
                   RUNNER_DATA=str(self.work / f"data-{i}"), RUNNER_WORK_DIR=str(self.work / f"jobs-{i}"))
        (self.work / f"jobs-{i}").mkdir(exist_ok=True)
        self.start(node, node, [str(BIN / "runner"), "work"], env=env)

    @staticmethod
    def wait(predicate, timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if predicate():
                    return
            except Exception:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"timed out waiting for {what}")

    def stop(self) -> None:
        for name in list(self.procs):
            self.kill(name, signal.SIGTERM if name == "postgres" else signal.SIGKILL)
        self.down_network()
