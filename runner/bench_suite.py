"""`runner bench --suite gpu`: the runner's whole GPU check in one process, one device call.

Five figures, each measured in this run (the ratios in interleaved rounds, best of each, as
runner/bench.py measures them), each with its goal:

1. CIFAR ResNet-18 evaluation ÷ pure forward, bf16 autocast and channels_last (goal ≥ 0.95);
2. ImageNet-format ResNet-50 evaluation ÷ pure forward, the JPEGs decoded on the GPU (nvJPEG,
   runner.datasets.images.BatchDecoder) (goal ≥ 0.9);
3. ``opt-cifar10-resnet18`` training harness ÷ a pure training step (goal ≥ 0.95);
4. sandboxed ÷ trusted evaluation on the device, the lower of the two classifier runs (≥ 0.95);
5. one ``cifar10`` job end to end through a real ``runner work`` process (the Celery prefork
   worker as deployed) serving pool ``gpu``, fed through a filesystem broker by a stand-in site
   (tests/runner/fakesite.py, over real HTTP): it must succeed; its wall time is reported.

Steps 1, 2 and 4 call runner.bench.bench_classifier, step 3 runner.tracks.train.bench_training.
The data are fake copies written by ``runner data fake`` under the work folder (labelled
synthetic); the models are random-init TorchScript files exported here (speed does not depend on
the weights). A step that fails is recorded as an error and the others still run, so one device
call brings back every figure it can.

On a machine without CUDA the suite still runs (``--device cpu``, ``--quick`` for tiny sizes, as
CI does): bf16 autocast and nvJPEG are skipped with a "skipped on cpu: needs CUDA" note, and the
figures prove that the script works, not how fast a GPU runs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import runner
from runner.progress import ProgressLine
from runner.workdir import locked_folder

NEEDS_CUDA = "skipped on cpu: needs CUDA"
CHECKOUT = Path(runner.__file__).resolve().parent.parent
FAKESITE = CHECKOUT / "tests" / "runner" / "fakesite.py"
E2E_TASK = "cifar10"
E2E_JOB_ID = 1


@dataclass(frozen=True)
class SuiteSizes:
    """How much each step measures. ``None`` batch sizes mean the task's default on the device."""

    cifar_per_class: int  # fake CIFAR-10 for evaluation: images per class in each file (test set = 10 × this)
    imagenet_per_class: int  # fake ImageNet val: JPEGs per class (18 classes)
    imagenet_arch: str
    cifar_batch: int | None
    cifar_batches: int
    imagenet_batch: int | None
    imagenet_batches: int
    repeats: int
    train_seconds: float
    train_batch: int | None
    train_release_sized: bool  # train on a fake set of the release's 50,000 images (else the small copy)
    job_timeout_s: float


FULL = SuiteSizes(cifar_per_class=500, imagenet_per_class=16, imagenet_arch="resnet50", cifar_batch=None,
                  cifar_batches=30, imagenet_batch=None, imagenet_batches=20, repeats=3, train_seconds=30.0,
                  train_batch=None, train_release_sized=True, job_timeout_s=300.0)
QUICK = SuiteSizes(cifar_per_class=2, imagenet_per_class=1, imagenet_arch="resnet18", cifar_batch=4,
                   cifar_batches=2, imagenet_batch=2, imagenet_batches=2, repeats=1, train_seconds=1.0,
                   train_batch=8, train_release_sized=False, job_timeout_s=120.0)


@dataclass
class Figure:
    """One row of the suite's table. ``value`` is None when the step failed (``error``)."""

    key: str
    label: str
    goal: float | None  # a ratio's lower bound; None for the end-to-end job (it must succeed)
    value: float | None = None
    unit: str = "ratio"
    detail: str = ""
    error: str = ""

    @property
    def passed(self) -> bool:
        if self.value is None or self.error:
            return False
        return self.goal is None or self.value >= self.goal

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


@dataclass
class SuiteReport:
    device: str
    quick: bool
    env: dict[str, Any]
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    measurements: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def errors(self) -> list[Figure]:
        return [f for f in self.figures if f.error]

    def to_dict(self) -> dict[str, Any]:
        return {"suite": "gpu", "device": self.device, "quick": self.quick, "wall_s": round(self.wall_s, 1),
                "env": self.env, "notes": self.notes, "figures": [f.to_dict() for f in self.figures],
                "all_passed": all(f.passed for f in self.figures), "measurements": self.measurements}


# --------------------------------------------------------------------------------------------
# Models and data.
# --------------------------------------------------------------------------------------------
def export_cifar_resnet18(path: Path) -> Path:
    """The platform's CIFAR ResNet-18 (runner.sandboxed.training) as a classifier submission: TorchScript,
    float32 [N, 3, 32, 32] in [0, 1] in, CIFAR-10 normalization inside, logits [N, 10] out;
    random init (seed 0)."""
    import torch

    from runner.sandboxed.training import build_model

    class Normalized(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = build_model("cifar-resnet18", 10, 3, seed=0)
            self.register_buffer("mean", torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net((x - self.mean) / self.std)

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice
        torch.jit.save(torch.jit.script(Normalized().eval()), str(path))
    return path


def prepare(work: Path, sizes: SuiteSizes, say: ProgressLine) -> dict[str, Path]:
    """Fake CIFAR-10 and ImageNet val under ``work/data``, the two classifier files under
    ``work/models``; returns their paths."""
    from runner import data_admin
    from runner.baselines.classifiers.export import export_torchvision

    data = work / "data"
    say(f"writing fake CIFAR-10 ({sizes.cifar_per_class} images per class and file)")
    data_admin.fake("cifar-10-batches-py", data, n_per_class=sizes.cifar_per_class)
    say(f"writing fake ImageNet val JPEGs ({sizes.imagenet_per_class} per class)")
    data_admin.fake("imagenet/val", data, n_per_class=sizes.imagenet_per_class)
    say("exporting CIFAR ResNet-18 (random init)")
    cifar = export_cifar_resnet18(work / "models" / "cifar-resnet18.pt")
    say(f"exporting {sizes.imagenet_arch} (random init)")
    imagenet = work / "models" / f"{sizes.imagenet_arch}.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice
        export_torchvision(sizes.imagenet_arch, imagenet, random_init=True)
    return {"data": data, "cifar": cifar, "imagenet": imagenet}


# --------------------------------------------------------------------------------------------
# The end-to-end job: a stand-in site, a real `runner work` process, a filesystem broker.
# --------------------------------------------------------------------------------------------
def _fakesite_module() -> Any:
    """tests/runner/fakesite.py of this checkout, loaded by path (the runner package does not ship
    its tests)."""
    if not FAKESITE.is_file():
        raise FileNotFoundError(f"the end-to-end step needs the stand-in site {FAKESITE}: run the suite from "
                                "a source checkout of this repository")
    spec = importlib.util.spec_from_file_location("runner_bench_fakesite", FAKESITE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _classifier_job(fakesite: Any, job_id: int, task: str, artifact: Path, hparams: dict[str, Any]) -> Any:
    """A stand-in site job whose spec is the one the site sends for a classifier (built from the
    catalogue by runner.evaluate.local_job_spec), with the stand-in's id and attempt counter."""
    from runner.evaluate import local_job_spec

    class ClassifierJob(fakesite.FakeJob):
        def spec(self) -> Any:
            base = local_job_spec(self.task, artifact, self.hparams)
            return replace(base, job_id=self.job_id, attempt=self.attempt, heartbeat_seconds=self.heartbeat_seconds,
                           submission=replace(base.submission, id=100 + self.job_id))

    return ClassifierJob(job_id, task, artifact.read_bytes(), hparams, heartbeat_seconds=5)


@contextlib.contextmanager
def _runner_work(argv: list[str], log: Path) -> Iterator[subprocess.Popen]:
    """``runner work`` in its own process group, stopped (TERM, then KILL) on the way out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNNER_", "CELERY_"))}
    for key in ("RUNNER_BWRAP", "RUNNER_SANDBOX_UID", "RUNNER_SANDBOX_GID", "RUNNER_WORK_DIR"):
        if key in os.environ:
            env[key] = os.environ[key]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CHECKOUT), os.environ.get("PYTHONPATH")]))
    with open(log, "w") as out:
        worker = subprocess.Popen([sys.executable, "-m", "runner.cli", "work", *argv], stdout=out,
                                  stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield worker
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()


def end_to_end_job(work: Path, artifact: Path, data_root: Path, *, device: str, hparams: dict[str, Any],
                   trust: bool, timeout_s: float, say: ProgressLine) -> dict[str, Any]:
    """Start ``runner work --pool gpu``, wait until it reports to the site, send one ``cifar10``
    job through the broker and wait for its outcome. Returns the outcome, the worker's start-up
    time and the job's wall time (sent → result posted), in seconds."""
    from celery import Celery

    from runner.spec import EVALUATE_TASK_NAME, celery_broker_settings

    fakesite = _fakesite_module()
    site = fakesite.FakeSite().start()
    log = work / "runner-work.log"
    try:
        job = _classifier_job(fakesite, E2E_JOB_ID, E2E_TASK, artifact, hparams)
        site.jobs[job.job_id] = job
        broker = f"filesystem://{work / 'broker'}"
        argv = ["--server", site.url, "--token", fakesite.TOKEN, "--pool", "gpu", "--device", device,
                "--data-root", str(data_root), "--broker", broker, "--loglevel", "WARNING"]
        if trust:
            argv.append("--trust")
        say("starting runner work --pool gpu")
        started = time.monotonic()
        deadline = started + timeout_s
        with _runner_work(argv, log) as worker:
            while not site.node_heartbeats and worker.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            if not site.node_heartbeats:
                raise RuntimeError(f"runner work did not come up (exit status {worker.poll()}):\n"
                                   f"{log.read_text()[-3000:]}")
            ready_s = time.monotonic() - started
            say(f"runner work is up after {ready_s:.1f} s; sending a {E2E_TASK} job")
            sender = Celery("bench-site", fixups=[], set_as_current=False)
            sender.conf.update(**celery_broker_settings(broker))
            sent = time.monotonic()
            sender.send_task(EVALUATE_TASK_NAME, args=[job.job_id], queue="runner.gpu")
            while not job.results and not job.failures and worker.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            wall_s = time.monotonic() - sent
        if job.results:
            result = job.results[0]["result"]
            return {"outcome": "succeeded", "task": E2E_TASK, "pool": "gpu", "device": device,
                    "worker_ready_s": round(ready_s, 2), "job_wall_s": round(wall_s, 2),
                    "runner_wall_s": result.get("timing", {}).get("wall_s"),
                    "sandbox": result.get("env", {}).get("sandbox"), "top1": result["metrics"].get("top1"),
                    "node_pools": site.node_heartbeats[0].get("pools")}
        if job.failures:
            failure = job.failures[0]
            raise RuntimeError(f"the job failed: {failure.get('kind')}: {failure.get('message')}\n"
                               f"{str(failure.get('log_tail', ''))[-2000:]}")
        raise RuntimeError(f"no outcome within {timeout_s:.0f} s (runner work exit status {worker.poll()}):\n"
                           f"{log.read_text()[-3000:]}")
    finally:
        site.stop()


# --------------------------------------------------------------------------------------------
# The suite.
# --------------------------------------------------------------------------------------------
def environment(device: str) -> dict[str, Any]:
    import torch

    from runner.sandbox import sandbox_available

    on_cuda = device.startswith("cuda") and torch.cuda.is_available()
    sandbox = sandbox_available()
    return {"runner": runner.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "device_name": torch.cuda.get_device_name(device) if on_cuda
            else platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "sandbox": sandbox.detail if sandbox.available else f"UNAVAILABLE: {sandbox.detail}"}


def _step(figures: list[Figure], say: ProgressLine, *keys: str) -> contextlib.AbstractContextManager:
    """Record an exception in the step as the error of the figures it was to measure."""

    @contextlib.contextmanager
    def guard() -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - one failing step must not lose the others' figures
            message = f"{type(exc).__name__}: {exc}"
            say(f"step failed: {message.splitlines()[0]}")
            for figure in figures:
                if figure.key in keys and figure.value is None:
                    figure.error = message[-2000:]

    return guard()


def run_suite(*, device: str, work_dir: Path | None = None, quick: bool = False, trust: bool = False,
              progress: ProgressLine | None = None) -> SuiteReport:
    """Measure the five figures on ``device`` ("cuda" or "cpu"). Raises ValueError when CUDA is
    asked for and absent, or when the sandbox is unavailable without ``trust``; a step that fails
    later is an ``error`` on its figures, not an exception."""
    import torch

    from runner.bench import bench_classifier
    from runner.sandbox import sandbox_available
    from runner.tracks.train import bench_training

    say = progress or (lambda message: None)
    on_cuda = device.startswith("cuda")
    if on_cuda and not torch.cuda.is_available():
        raise ValueError(f"device {device} was asked for but CUDA is not available here; use --device cpu "
                         "(with --quick) to check the script on this machine")
    sandbox = sandbox_available()
    if not sandbox.available and not trust:
        raise ValueError(f"the sandbox is unavailable ({sandbox.detail}): figure 4 and the end-to-end job need "
                         "it; install bubblewrap or set RUNNER_BWRAP, or pass --trust to measure without it")
    sizes = QUICK if quick else FULL
    report = SuiteReport(device=device, quick=quick, env=environment(device))
    precision = "bf16" if on_cuda else "fp32"
    if not on_cuda:
        report.notes += [
            f"bf16 autocast and channels_last: {NEEDS_CUDA} (figures 1, 4 and 5 measured in fp32)",
            f"nvJPEG decoding on the GPU: {NEEDS_CUDA} (figure 2 decodes the JPEGs with PIL in the runner process)",
        ]
    if quick:
        report.notes.append("quick sizes: tiny batches and fake data; the figures prove the script runs, "
                            "not how fast the runner is")
    if not sandbox.available:
        report.notes.append(f"sandbox unavailable ({sandbox.detail}): --trust ran the 'sandboxed' figures "
                            "as plain processes")
    figures = [
        Figure("cifar_eval_over_forward", f"CIFAR ResNet-18 evaluation ÷ pure forward ({precision}"
               + (", channels_last)" if on_cuda else ")"), 0.95),
        Figure("imagenet_eval_over_forward", f"ImageNet {sizes.imagenet_arch} evaluation ÷ pure forward ("
               + ("nvJPEG)" if on_cuda else "PIL decoding)"), 0.9),
        Figure("train_harness_over_step", "opt-cifar10-resnet18 harness ÷ pure training step", 0.95),
        Figure("sandboxed_over_trusted", f"sandboxed ÷ trusted evaluation on {device}", 0.95),
        Figure("end_to_end_job", f"one {E2E_TASK} job through runner work, pool gpu", None, unit="s"),
    ]
    report.figures = figures
    by_key = {f.key: f for f in figures}
    began = time.monotonic()
    with locked_folder("runner-bench-suite-", work_dir) as tmp:  # unmounts scratch volumes too
        work = Path(tmp)
        os.chmod(work, 0o755)
        paths: dict[str, Path] = {}
        with _step(figures, say, *by_key):
            paths = prepare(work, sizes, say)
        if paths:
            with _step(figures, say, "cifar_eval_over_forward", "sandboxed_over_trusted"):
                say(f"CIFAR ResNet-18 on cifar10 ({precision})")
                cifar = bench_classifier("cifar10", paths["cifar"], device=device, data_root=paths["data"],
                                         batches=sizes.cifar_batches, batch_size=sizes.cifar_batch,
                                         precision=precision, trust=trust, repeats=sizes.repeats,
                                         progress=lambda m: say(f"cifar10: {m}"))
                report.measurements["cifar"] = cifar
                by_key["cifar_eval_over_forward"].value = cifar["eval_over_forward"]
                by_key["cifar_eval_over_forward"].detail = _classifier_detail(cifar)
            with _step(figures, say, "imagenet_eval_over_forward", "sandboxed_over_trusted"):
                say(f"{sizes.imagenet_arch} on imagenet-val ({precision})")
                imagenet = bench_classifier("imagenet-val", paths["imagenet"], device=device,
                                            data_root=paths["data"], batches=sizes.imagenet_batches,
                                            batch_size=sizes.imagenet_batch, precision=precision, trust=trust,
                                            repeats=sizes.repeats, progress=lambda m: say(f"imagenet-val: {m}"))
                imagenet["decoding"] = _decoding(device)
                report.measurements["imagenet"] = imagenet
                by_key["imagenet_eval_over_forward"].value = imagenet["eval_over_forward"]
                by_key["imagenet_eval_over_forward"].detail = (_classifier_detail(imagenet)
                                                               + f"; decoding: {imagenet['decoding']}")
            runs = [(name, report.measurements[name]) for name in ("cifar", "imagenet")
                    if name in report.measurements]
            if runs:
                name, lowest = min(runs, key=lambda item: item[1]["sandboxed_over_trusted"])
                figure = by_key["sandboxed_over_trusted"]
                figure.value, figure.error = lowest["sandboxed_over_trusted"], ""
                figure.detail = "lower of " + ", ".join(f"{n} {m['sandboxed_over_trusted']:.3f}" for n, m in runs) \
                    + f" (sandbox: {lowest['sandbox']})"
        with _step(figures, say, "train_harness_over_step"):
            say(f"opt-cifar10-resnet18 training harness vs pure step ({sizes.train_seconds:g} s)")
            # A data root without CIFAR: bench_training then fakes one repeated to the release's
            # 50,000 training images, so epoch ends come as often as on the real set.
            train_root = work / "no-data" if sizes.train_release_sized or not paths else paths["data"]
            training = bench_training("opt-cifar10-resnet18", device=device, data_root=train_root,
                                      seconds=sizes.train_seconds, batch_size=sizes.train_batch)
            report.measurements["training"] = training
            figure = by_key["train_harness_over_step"]
            figure.value = training["ratio"]
            figure.detail = (f"{training['train_items_per_s']:.0f} vs {training['pure_step_items_per_s']:.0f} "
                             f"images/s, batch {training['batch_size']}, {training['precision']}")
        if paths:
            with _step(figures, say, "end_to_end_job"):
                job = end_to_end_job(work, paths["cifar"], paths["data"], device=device,
                                     hparams={"precision": precision}, trust=trust, timeout_s=sizes.job_timeout_s,
                                     say=say)
                report.measurements["end_to_end"] = job
                figure = by_key["end_to_end_job"]
                figure.value = job["job_wall_s"]
                figure.detail = (f"succeeded; worker up in {job['worker_ready_s']:.1f} s, runner's own "
                                 f"evaluation {job['runner_wall_s']} s, sandbox {job['sandbox']}")
    report.wall_s = time.monotonic() - began
    return report


def _classifier_detail(m: dict[str, Any]) -> str:
    return (f"{m['sandboxed_eval_items_per_s']:.0f} vs {m['forward_items_per_s']:.0f} images/s, batch "
            f"{m['batch_size']}, {m['precision']}, {m['memory_format']}")


def _decoding(device: str) -> str:
    from runner.datasets.images import BatchDecoder

    return BatchDecoder("resize256-centercrop224", device=device).description
