"""Many machines on one: the site, PostgreSQL and Redis in one network namespace, two runner nodes
in two others. Kill a node in the middle of a job, then restart the broker mid-run: every job must
still end with exactly one result. Needs root and iproute2 (CI runs as root)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from .cluster import Cluster

pytestmark = pytest.mark.multinode

SLOW_OPTIMIZER = '''
import time
import torch


class SlowSGD(torch.optim.SGD):
    def step(self, closure=None):
        time.sleep(0.02)
        return super().step(closure)


def make_optimizer(params, lr=0.05):
    return SlowSGD(params, lr=lr)
'''

SUBMIT = '''
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from leaderboard.benchmarks.models import Benchmark
from leaderboard.submissions.services import submission_create
owner, _ = get_user_model().objects.get_or_create(username="alice", defaults={"is_staff": True})
for i in range(%(n)d):
    s = submission_create(owner=owner, benchmark=Benchmark.objects.get(slug="opt-synthetic"), name="%(prefix)s%%d" %% i,
                          upload=SimpleUploadedFile("slow.py", %(source)r.encode()), hparams={"lr": 0.05})
    print(s.pk)
'''

JOBS = '''
import json
from leaderboard.boards.models import BoardEntry
from leaderboard.submissions.models import EvaluationJob
jobs = list(EvaluationJob.objects.values("id", "state", "attempt", "result_attempt", "runner__name", "progress",
                                         "submission__name", "error_kind"))
print(json.dumps({"jobs": jobs, "entries": BoardEntry.objects.count()}))
'''


@pytest.fixture
def cluster():
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.fail("the multi-node test needs root and iproute2 (CI runs as root)")
    # Not pytest's tmp_path: PostgreSQL runs as its own user and needs to reach its folders.
    work = Path(tempfile.mkdtemp(prefix="lbtest-cluster-"))
    os.chmod(work, 0o755)
    c = Cluster(work)
    c.env["JOB_DISPATCH_TIMEOUT_SECONDS"] = "15"
    try:
        c.up_network()
        c.start_postgres()
        c.start_broker()
        c.start_site()
        for i in range(len(c.nodes)):
            c.start_runner(i)
        yield c
    finally:
        c.stop()
        shutil.rmtree(work, ignore_errors=True)


def state(cluster: Cluster) -> dict:
    return json.loads(cluster.query(JOBS).splitlines()[-1])


def submit(cluster: Cluster, prefix: str, n: int) -> None:
    cluster.query(SUBMIT % {"n": n, "prefix": prefix, "source": SLOW_OPTIMIZER})


def wait_all_succeeded(cluster: Cluster, names_prefix: str, expected: int, timeout: float) -> list[dict]:
    deadline = time.time() + timeout
    last = {}
    while time.time() < deadline:
        last = state(cluster)
        mine = [j for j in last["jobs"] if j["submission__name"].startswith(names_prefix)]
        if len(mine) == expected and all(j["state"] == "succeeded" for j in mine):
            return mine
        time.sleep(2)
    logs = "\n".join(f"--- {n}\n{cluster.log(n)}" for n in ["site-worker", *cluster.nodes])
    redis = cluster.redis_state()
    pytest.fail(f"jobs did not all succeed in {timeout:.0f} s: {last}\nredis: {redis}\n{logs}")


def test_a_node_killed_mid_job_and_a_broker_restart_lose_nothing(cluster):
    node1, node2 = cluster.nodes
    submit(cluster, "kill-", 3)

    def node1_busy():
        return any(j["state"] == "running" and j["runner__name"] == node1 and j["progress"] > 0
                   for j in state(cluster)["jobs"])
    cluster.wait(node1_busy, 180, f"{node1} to be in the middle of a job")
    # The node vanishes: its processes die and its network goes down.
    cluster.kill(node1)
    cluster.start("cut", node1, ["ip", "link", "set", "lbn0", "down"])

    jobs = wait_all_succeeded(cluster, "kill-", 9, 300)
    assert all(j["result_attempt"] == j["attempt"] for j in jobs), "each job keeps the result of its live attempt"
    assert any(j["attempt"] >= 2 and j["runner__name"] == node2 for j in jobs), "node2 took over node1's job"
    assert state(cluster)["entries"] == 9, "exactly one board row per job"

    # Now the broker restarts mid-run (Redis here keeps nothing on disk: queued wake-ups are lost).
    submit(cluster, "broker-", 2)
    cluster.wait(lambda: any(j["state"] == "running" and j["submission__name"].startswith("broker-")
                             for j in state(cluster)["jobs"]), 120, "a job of the second batch to run")
    cluster.kill("redis", signal.SIGKILL)
    time.sleep(3)
    cluster.start_broker()
    jobs = wait_all_succeeded(cluster, "broker-", 6, 300)
    assert all(j["result_attempt"] == j["attempt"] for j in jobs)
    assert state(cluster)["entries"] == 15
