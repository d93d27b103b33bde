"""One evaluation path: every kind of task, evaluated by a real `runner work` process (the Celery
prefork worker as deployed, on Redis) for the stand-in site, gives the result document that
`runner run` gives on the same files.

What runs, on small fake copies of every dataset (`runner data fake`'s writers):
- every classifier task (runner.datasets.CLASSIFIER_TASKS, all eleven) with three TorchScript
  models whose logits are a known function of the pixels (tests/runner/classifier_models.py):
  10 classes (digits, CIFAR-10, CIFAR-10-C), 100 (CIFAR-100, CIFAR-100-C) and 1,000 (the ImageNet
  family, GeoDE, Dollar Street); ImageNet-C has enough images that its files are decoded by the
  decoder's pool, the path that once failed only inside the worker;
- one denoising task (denoise-skimage-gray-gauss25, the identity baseline: the quickest);
- the optimizer tracks: opt-f1 and opt-digits with plain SGD; opt-text-transformer with Adam on a
  budget of a few steps (the same task params through `runner run --params` and the site's spec);
  two seed methods that talk to the runner's loop through its hooks, on a two-epoch opt-digits:
  TrAct + SGD (``first_layer_stats`` every step) and the EL2N data diet (``el2n_scores``, then
  training on the selected half).

`runner run` evaluates each file once, with all of its tasks in one call (one model load, as a
worker keeps one warm server per submission). One `runner work` process serves every job.

Fields that legitimately differ between the two paths, and only these, are left out of the
comparison (IGNORED below): the wall clock (``timing``; the denoiser's speed,
``metrics.seconds_per_megapixel``; opt-digits' ``seconds_to_target`` figures, wall-clock time to
the target accuracy, its seeds' ``train_s`` and its curves' ``seconds``) and the warm model server's
bookkeeping (``env.model_server``: whether this job found the server warm, how many jobs it has
served, how long the load took; ``env.memory.peak_bytes``, its resident peak so far) and the
per-image file's name (``R.per_image.npz`` follows
`runner run --out`; its sha256, bytes and image count are compared, so every classifier task's
per-image arrays agree to the byte). Everything else — metrics, intervals, breakdowns, curves, the
rest of env — must be equal, number for number.
"""
from __future__ import annotations

import copy
import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from runner import datasets
from runner.catalogue import catalogue_task
from runner.datasets import CLASSIFIER_TASKS
from runner.evaluate import local_job_spec
from runner.spec import EVALUATE_TASK_NAME, JobSpec, celery_broker_settings
from tests.runner.classifier_models import ColourClassifier, save_torchscript
from tests.runner.fakesite import TOKEN, FakeJob, FakeSite

pytestmark = [pytest.mark.e2e]

RUNNER_BIN = Path(sys.executable).parent / "runner"
REPO = Path(__file__).resolve().parents[2]
BASELINE_OPTIMIZERS = REPO / "runner" / "baselines" / "optimizers"
SGD = b'''
import torch


def make_optimizer(params, lr=0.05):
    return torch.optim.SGD(params, lr=lr)
'''
DENOISE_TASK = "denoise-skimage-gray-gauss25"
SEED_METHODS = {"tract-sgd": ["first_layer_stats"], "el2n-diet": ["el2n_scores"]}  # and the hooks each asks for

# Paths into a result document that may differ between `runner run` and `runner work`: wall
# clock and the warm server's bookkeeping. A path (fnmatch patterns, one per key) names a key
# and everything under it.
IGNORED: tuple[tuple[str, ...], ...] = (
    ("timing",),
    ("env", "model_server"),
    ("metrics", "seconds_per_megapixel"),
    ("metrics", "seconds_to_target_*"),
    ("ci95", "seconds_to_target_*"),
    ("breakdown", "per_seed", "*", "seconds_to_target"),
    ("breakdown", "per_seed", "*", "train_s"),
    ("curves", "*", "seconds"),
    ("files", "per_image", "name"),  # the per-image file's name follows --out; its sha256 must agree
    # The model server's peak resident memory: a warm server's earlier jobs and the allocator's
    # timing move it by a few hundred kB (its limit and source must agree).
    ("env", "memory", "peak_bytes"),
    # Saliency is bounded by wall-clock time: how many maps fit varies; method, layer and sample do not.
    ("saliency", "seconds"),
    ("saliency", "budget_s"),
    ("saliency", "rows"),
    ("saliency", "index"),
    ("saliency", "target"),
    ("saliency", "failure"),
    ("saliency", "maps"),
    ("saliency", "methods", "*", "seconds"),  # format 2: each method's maps, as many as fitted
    ("saliency", "methods", "*", "rows"),
    ("saliency", "methods", "*", "maps"),
    ("saliency", "methods", "*", "skipped"),  # "the budget was spent": also the clock's
)


@dataclass
class Submission:
    """One file and the tasks it is evaluated on, as one submission of the site's."""

    name: str
    artifact: Path
    tasks: tuple[str, ...]
    hparams: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)  # task params replacing the catalogue's


# --------------------------------------------------------------------------------------------
# Comparing two documents.
# --------------------------------------------------------------------------------------------
def _ignored(path: tuple[str, ...]) -> bool:
    return any(len(path) >= len(rule) and all(fnmatch.fnmatchcase(p, r) for r, p in zip(rule, path, strict=False))
               for rule in IGNORED)


def differences(local: Any, worker: Any, path: tuple[str, ...] = ()) -> list[str]:
    """Where two result documents differ, outside IGNORED: one line per path."""
    if _ignored(path):
        return []
    where = ".".join(path) or "(document)"
    if isinstance(local, dict) and isinstance(worker, dict):
        found = []
        if only_local := sorted(set(local) - set(worker)):
            found.append(f"{where}: keys only in runner run: {only_local}")
        if only_worker := sorted(set(worker) - set(local)):
            found.append(f"{where}: keys only in runner work: {only_worker}")
        for key in sorted(set(local) & set(worker)):
            found += differences(local[key], worker[key], (*path, str(key)))
        return found
    if isinstance(local, list) and isinstance(worker, list) and len(local) == len(worker):
        return [d for i, (a, b) in enumerate(zip(local, worker, strict=True)) for d in differences(a, b, (*path, str(i)))]
    return [] if local == worker else [f"{where}: runner run {local!r} != runner work {worker!r}"]


def test_the_comparison_sees_a_changed_number_a_missing_key_and_ignores_only_the_clock():
    doc = {"metrics": {"top1": 50.0, "seconds_to_target_mean": 1.0}, "timing": {"wall_s": 3.0},
           "env": {"model_server": {"reused": False}, "device": "cpu"}, "curves": {"seed_0": {"seconds": [1.0]}}}
    other = copy.deepcopy(doc)
    other["timing"]["wall_s"] = 9.0
    other["metrics"]["seconds_to_target_mean"] = 2.0
    other["env"]["model_server"]["reused"] = True
    other["curves"]["seed_0"]["seconds"] = [5.0]
    assert differences(doc, other) == []
    other["metrics"]["top1"] = 50.000001
    del other["env"]["device"]
    assert differences(doc, other) == [
        "env: keys only in runner run: ['device']",
        "metrics.top1: runner run 50.0 != runner work 50.000001",
    ]


# --------------------------------------------------------------------------------------------
# Fixtures: fake data, the submissions, the two paths.
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A small fake copy of every dataset a classifier task reads (digits ships with scikit-learn;
    the denoising task reads scikit-image's bundled photographs)."""
    root = tmp_path_factory.mktemp("data")
    for slug in CLASSIFIER_TASKS:
        name = catalogue_task(slug).dataset
        if datasets.get(name).present(root):  # digits ships with scikit-learn: always present
            continue
        # ImageNet-C: 2 classes × 19 corruptions × 5 severities = 190 files, more than four CPU
        # batches, so the decoder's pool runs (runner.tracks.classify.decode_workers).
        options = {"classes": 2} if slug == "imagenet-c" else {}
        datasets.get(name).fake(root, **options)
    return root


@pytest.fixture(scope="module")
def submissions(tmp_path_factory) -> list[Submission]:
    folder = tmp_path_factory.mktemp("submissions")
    (folder / "sgd.py").write_bytes(SGD)
    imagenet = ("imagenet-val", "imagenet-a", "imagenet-r", "imagenet-c", "geode", "dollarstreet")
    made = [
        Submission("colour-10", save_torchscript(ColourClassifier(10), folder / "colour10.pt"),
                   ("digits", "cifar10", "cifar10-c")),
        Submission("colour-100", save_torchscript(ColourClassifier(100), folder / "colour100.pt"),
                   ("cifar100", "cifar100-c")),
        # clean_top1 from the hparams, so imagenet-c's relative mCE does not hang on the order of jobs
        Submission("colour-1k", save_torchscript(ColourClassifier(1000), folder / "colour1k.pt"), imagenet,
                   {"clean_top1": 76.1}),
        Submission("identity", REPO / "runner" / "baselines" / "denoisers" / "identity.pt", (DENOISE_TASK,)),
        Submission("sgd", folder / "sgd.py", ("opt-f1", "opt-digits"), {"lr": 0.05}),
        Submission("adam", BASELINE_OPTIMIZERS / "adam.py", ("opt-text-transformer",),
                   {"lr": 1e-2}, {"steps": 4, "batch_size": 4, "warmup_steps": 2, "eval_every": 4, "seeds": 2}),
        Submission("tract-sgd", BASELINE_OPTIMIZERS / "tract_sgd.py", ("opt-digits",), {"lr": 0.01, "lam": 0.1},
                   {"epochs": 2, "seeds": 2}),
        Submission("el2n-diet", BASELINE_OPTIMIZERS / "el2n_diet.py", ("opt-digits",),
                   {"lr": 0.05, "score_after": 10, "keep": 0.5}, {"epochs": 2, "seeds": 2}),
    ]
    covered = {t for s in made for t in s.tasks}
    assert set(CLASSIFIER_TASKS) <= covered, "every classifier task is driven through both paths"
    return made


def runner_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
    return {**env, "COLUMNS": "160", **extra}


def run_locally(submission: Submission, data_root: Path, out: Path) -> dict[tuple[str, str], dict]:
    """`runner run` on one file with all its tasks; the result documents by (submission, task)."""
    args = [str(RUNNER_BIN), "run", "--artifact", str(submission.artifact), "--data-root", str(data_root),
            "--out", str(out), "--hparams", json.dumps(submission.hparams), "--params", json.dumps(submission.params)]
    for task in submission.tasks:
        args += ["--task", task]
    done = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=out.parent,
                          env=runner_env(RUNNER_WORK_DIR=str(out.parent)))
    assert done.returncode == 0, f"runner run {submission.name}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    if len(submission.tasks) == 1:
        return {(submission.name, submission.tasks[0]): json.loads(out.read_text())}
    return {(submission.name, task): json.loads((out / f"result-{task}.json").read_text())
            for task in submission.tasks}


@dataclass
class SiteJob(FakeJob):
    """The stand-in site's job, with the spec the site would send: `runner run`'s (local_job_spec)
    under this job's id and attempt and the submission's id."""

    template: JobSpec | None = None

    def spec(self) -> JobSpec:
        spec = copy.deepcopy(self.template)
        spec.job_id, spec.attempt, spec.heartbeat_seconds = self.job_id, self.attempt, self.heartbeat_seconds
        return spec


@pytest.fixture
def fake_site():
    site = FakeSite().start()
    yield site
    site.stop()


class Worker:
    """A `runner work` process in its own session (stopping it stops its children too)."""

    def __init__(self, server: str, broker: str, data_root: Path, folder: Path):
        if not shutil.which("bwrap"):
            pytest.fail("bubblewrap is not installed: the runner's sandbox needs it (apt install bubblewrap)")
        self.log = folder / "runner-work.log"
        args = [str(RUNNER_BIN), "work", "--server", server, "--token", TOKEN, "--pool", "cpu",
                "--data-root", str(data_root), "--broker", broker, "--device", "cpu"]
        self.proc = subprocess.Popen(args, stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=folder,
                                     env=runner_env(RUNNER_WORK_DIR=str(folder)))

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture
def worker(fake_site, redis_url, data_root, tmp_path):
    started = Worker(fake_site.url, redis_url, data_root, tmp_path)
    yield started
    started.stop()


def dispatch(broker: str, job_ids: list[int]) -> None:
    """What the site's dispatch does: the job id on the task's queue (here every job's is runner.cpu)."""
    app = Celery("cross-path-test", set_as_current=False)
    app.conf.update(**celery_broker_settings(broker))
    with app.connection_for_write() as connection:
        for job_id in job_ids:
            app.send_task(EVALUATE_TASK_NAME, args=[job_id], queue="runner.cpu", connection=connection)


# --------------------------------------------------------------------------------------------
# The test.
# --------------------------------------------------------------------------------------------
def test_every_task_kind_gives_the_same_result_document_through_runner_work_as_through_runner_run(
        fake_site, worker, redis_url, data_root, submissions, tmp_path):
    jobs: dict[int, tuple[Submission, SiteJob]] = {}
    for number, submission in enumerate(submissions, start=1):
        for task in submission.tasks:
            job_id = 100 * number + len(jobs)
            template = local_job_spec(task, submission.artifact, submission.hparams)
            template.task.params.update(submission.params)
            template.submission.id = number
            job = SiteJob(job_id, task, submission.artifact.read_bytes(), submission.hparams, heartbeat_seconds=2,
                          template=template)
            fake_site.jobs[job_id] = job
            jobs[job_id] = (submission, job)
    dispatch(redis_url, list(jobs))

    # `runner run` meanwhile, one call per file: the worker serves one job at a time, so the two
    # paths share the two cores.
    local: dict[tuple[str, str], dict] = {}
    errors: list[BaseException] = []
    times: dict[str, float] = {}

    def run_all() -> None:
        try:
            for submission in submissions:
                local.update(run_locally(submission, data_root, tmp_path / f"run-{submission.name}"))
            times["runs"] = time.monotonic()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    started = time.monotonic()
    runs = threading.Thread(target=run_all, name="runner-run")
    runs.start()
    deadline = started + 1200  # a safety net: about 5 minutes on a quiet 2-core host
    while time.monotonic() < deadline and not all(j.results or j.failures for _, j in jobs.values()):
        if worker.proc.poll() is not None:
            pytest.fail(f"runner work exited with {worker.proc.returncode}:\n{worker.tail()}")
        time.sleep(0.5)
    worker_done = time.monotonic()
    runs.join(max(1.0, deadline - time.monotonic()))
    assert not errors, errors[0]
    assert not runs.is_alive(), "runner run did not finish in time"
    runs_done = times["runs"]

    failures = {(s.name, j.task): j.failures[0] for s, j in jobs.values() if j.failures}
    assert not failures, f"jobs failed in runner work: {failures}\n{worker.tail()}"
    unfinished = [(s.name, j.task) for s, j in jobs.values() if not j.results]
    assert not unfinished, f"runner work never finished {unfinished}:\n{worker.tail()}"

    assert sorted(local) == sorted((s.name, j.task) for s, j in jobs.values())
    mismatches = {}
    for submission, job in jobs.values():
        assert len(job.results) == 1, f"{submission.name} {job.task}: {len(job.results)} results posted"
        found = differences(local[submission.name, job.task], job.results[0]["result"])
        if found:
            mismatches[f"{submission.name} {job.task}"] = found
    assert not mismatches, json.dumps(mismatches, indent=1)

    by_task = {j.task: j.results[0]["result"] for s, j in jobs.values() if s.name not in SEED_METHODS}
    # The decoder's pool really ran inside the Celery prefork child (ImageNet-C's 190 files).
    assert "thread" in by_task["imagenet-c"]["env"]["decode"], by_task["imagenet-c"]["env"]["decode"]
    assert by_task["imagenet-c"]["metrics"].get("relative_mce") is not None
    for task in CLASSIFIER_TASKS:
        assert by_task[task]["env"]["sandbox"].startswith("bwrap"), task
        assert by_task[task]["env"]["synthetic_data"] is (task != "digits"), task
    # The seed methods really used their hooks in the worker: TrAct's first-layer statistics on the
    # fixed loop, the diet's one scoring of every training example on the sample loop.
    seeds = {s.name: j.results[0]["result"] for s, j in jobs.values() if s.name in SEED_METHODS}
    for name, result in seeds.items():
        assert result["env"]["hooks"] == SEED_METHODS[name], (name, result["env"]["hooks"])
    assert "samples" not in seeds["tract-sgd"]["env"]
    assert [s["scored"] for s in seeds["el2n-diet"]["env"]["samples"]] == [1347, 1347]  # n_train, each seed
    print(f"\ncross-path: {len(jobs)} jobs through runner work in {worker_done - started:.1f} s, runner run's "
          f"{len(submissions)} calls beside them in {runs_done - started:.1f} s")
