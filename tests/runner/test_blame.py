"""Whose fault, from the runner's side: for every error kind a runner reports, a real fault of
that kind goes through the runner's job loop (claim, download, evaluate in the sandbox, report)
and the stand-in site hears that kind. docs/errors.md has the table; the site's side of each
kind (retried or not, counted or not) is tests/integration/runners/test_blame.py."""
from __future__ import annotations

import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from runner import devices, serve
from runner.devices import DeviceReport, blame, device_fault
from runner.sandbox import sandbox_available
from runner.spec import ERROR_KINDS, ErrorKind, EvaluationError, is_user_error, sniff_model_format
from runner.worker import process_job

from . import sources
from .classifier_models import FakeOutOfMemory, WrongShape, save_torchscript
from .fakesite import FakeJob

pytestmark = pytest.mark.usefixtures("bwrap")
GiB = 1 << 30
CUDA = torch.cuda.is_available()
# The site decides these two alone: the reaper sees a runner stop answering, or no runner come.
SITE_DECIDED = {ErrorKind.LEASE_EXPIRED, ErrorKind.NEVER_CLAIMED}


@dataclass
class Job(FakeJob):
    """The stand-in site's job for any kind of submission, with an optional tighter time limit."""

    kind: str = "optimizer"
    time_limit_s: int | None = None

    def spec(self):
        spec = super().spec()
        if self.kind != "optimizer":
            spec.task.kind = spec.submission.kind = self.kind
            spec.submission.artifact_format = sniff_model_format(self.artifact[:4096], self.artifact)
        if self.time_limit_s:
            spec.task.time_limit_s = self.time_limit_s
        return spec


class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class Allocates(torch.nn.Module):
    """Asks the device for ``nbytes`` on every batch, as a model too big for it would."""

    def __init__(self, nbytes: int):
        super().__init__()
        self.nbytes = nbytes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scratch = torch.empty([self.nbytes], dtype=torch.uint8, device=x.device)
        return x.flatten(1)[:, :10] + scratch[:1].float()


class SaysTheDriverFailed(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("CUDA error: unspecified launch failure (the driver, surely; retry me)")


def model_bytes(module: torch.nn.Module, tmp_path: Path) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return save_torchscript(module, tmp_path / f"{type(module).__name__}.pt").read_bytes()


def absent_cuda_device() -> str:
    """A CUDA device this machine does not have: cuda on a machine without CUDA (the issue's
    case), else the index one past the last GPU."""
    return f"cuda:{torch.cuda.device_count()}" if CUDA else "cuda"


@pytest.fixture(autouse=True)
def own_work_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("RUNNER_WORK_DIR", str(tmp_path))
    serve.POOL.close_idle()
    yield
    serve.POOL.close_idle()


# Each scenario: a real fault of its kind, as (job, process_job options, words the report names).
Scenario = Callable[[Path], tuple[Job, dict[str, Any], str]]


def _sandbox_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_BWRAP", str(tmp_path / "no-such-bwrap"))
    assert not sandbox_available(refresh=True).available


SCENARIOS: dict[str, Scenario] = {
    ErrorKind.INVALID_ARTIFACT: lambda tmp: (Job(1, "opt-f1", sources.SYNTAX_ERROR, {}), {}, "syntax error at line 4"),
    ErrorKind.BAD_HPARAMS: lambda tmp: (Job(2, "opt-f1", sources.SGD, {"lr": 0.1, "warp": 9}), {}, "warp"),
    ErrorKind.RUNTIME_ERROR: lambda tmp: (Job(3, "opt-f1", sources.RAISES_IN_STEP, {"lr": 0.1}), {},
                                          "ZeroDivisionError"),
    ErrorKind.WRONG_OUTPUT: lambda tmp: (Job(4, "digits", model_bytes(WrongShape(), tmp), {}, kind="classifier"), {},
                                         "digits needs logits of shape"),  # caught on the contract probe's batch
    ErrorKind.NOT_FINITE: lambda tmp: (Job(5, "opt-f2", sources.GOES_TO_NAN, {"lr": 0.01}), {}, "nan at step 5"),
    ErrorKind.TIMEOUT: lambda tmp: (Job(6, "opt-f1", sources.SLOW_SGD, {"lr": 0.05, "delay": 1.0}, time_limit_s=3),
                                    {}, "time limit"),
    ErrorKind.OUT_OF_MEMORY: lambda tmp: (Job(7, "digits", model_bytes(FakeOutOfMemory(0), tmp), {},
                                              kind="classifier"), {}, "one item at a time"),
    ErrorKind.SANDBOX_VIOLATION: lambda tmp: (Job(8, "opt-f1", sources.PHONES_HOME, {"lr": 0.1}), {}, "Network is unreachable"),
    ErrorKind.DATASET_MISSING: lambda tmp: (Job(9, "cifar10", model_bytes(Linear(), tmp), {}, kind="classifier"),
                                            {"data_root": tmp / "empty"}, "cifar"),
    ErrorKind.DOWNLOAD_FAILED: lambda tmp: (Job(10, "opt-f1", sources.SGD, {}, announced_sha256="0" * 64), {},
                                            "X-Artifact-SHA256"),
    ErrorKind.SANDBOX_UNAVAILABLE: lambda tmp: (Job(11, "opt-f1", sources.SGD, {"lr": 0.1}), {}, "not installed"),
    ErrorKind.RUNNER_ERROR: lambda tmp: (Job(12, "opt-f1", sources.SGD, {}, params={"function": "f1", "steps": "x"}),
                                         {}, "ValueError"),
    ErrorKind.DEVICE_ERROR: lambda tmp: (Job(13, "digits", model_bytes(Linear(), tmp), {}, kind="classifier"),
                                         {"device": absent_cuda_device()}, "does not count against your quota"),
}


def test_every_error_kind_has_a_fault_that_produces_it_or_is_decided_by_the_site_alone():
    assert set(SCENARIOS) | SITE_DECIDED == ERROR_KINDS
    assert not set(SCENARIOS) & SITE_DECIDED


@pytest.mark.parametrize("kind", sorted(SCENARIOS))
def test_the_runner_reports_each_fault_as_its_kind_to_the_site(kind, site, client, tmp_path, monkeypatch):
    job, options, words = SCENARIOS[kind](tmp_path)
    site.jobs[job.job_id] = job
    options.setdefault("data_root", tmp_path)
    try:
        if kind == ErrorKind.SANDBOX_UNAVAILABLE:
            _sandbox_unavailable(tmp_path, monkeypatch)
        outcome = process_job(job.job_id, client, **options)
    finally:
        monkeypatch.undo()
        assert sandbox_available(refresh=True).available
    assert outcome == "failed" and job.results == []
    [failure] = job.failures
    assert failure["kind"] == kind, failure["message"]
    assert words in failure["message"], failure["message"]
    if kind == ErrorKind.DEVICE_ERROR:
        # The case: the model never ran, and the runner says so instead of blaming it.
        assert "the runner's device failed, not the submission" in failure["message"]
        assert not is_user_error(failure["kind"])


def test_a_runner_whose_job_is_taken_back_reports_nothing_and_leaves_the_verdict_to_the_site(site, client, tmp_path):
    job = site.add_job(14, "opt-f1", sources.SLOW_SGD, {"lr": 0.05}, heartbeat_seconds=1, heartbeat_status=409)
    assert process_job(14, client, data_root=tmp_path) == "dropped"
    assert job.failures == [] and job.results == []


# --------------------------------------------------------------------------------------------
# The device rule (runner/devices.py), on the reports a probe gives.
# --------------------------------------------------------------------------------------------
H200 = dict(name="NVIDIA H200", count=1, total_bytes=140 * GiB)


def test_a_device_the_probe_cannot_use_is_the_platforms_fault_with_the_probes_reason():
    report = DeviceReport("cuda", False, "CUDA is not available (torch sees no CUDA device)")
    assert device_fault(report) == "CUDA is not available (torch sees no CUDA device)"


def test_a_device_mostly_held_by_other_processes_is_the_platforms_fault():
    report = DeviceReport("cuda:0", True, free_bytes=30 * GiB, **H200)
    fault = device_fault(report, min_free=0.5)
    assert fault is not None and "other processes hold 110.0 GiB of cuda:0's 140.0 GiB" in fault


def test_memory_the_runner_holds_itself_does_not_make_the_device_look_full():
    report = DeviceReport("cuda:0", True, free_bytes=60 * GiB, **H200)
    assert device_fault(report, own_bytes=20 * GiB, min_free=0.5) is None
    assert device_fault(report, own_bytes=0, min_free=0.5) is not None


def test_a_healthy_device_that_is_mostly_free_leaves_the_submission_its_own_error():
    assert device_fault(DeviceReport("cuda:0", True, free_bytes=139 * GiB, **H200), min_free=0.5) is None
    assert device_fault(DeviceReport("cpu", True, name="cpu")) is None


def test_the_free_fraction_comes_from_the_environment_within_bounds(monkeypatch):
    monkeypatch.setenv("RUNNER_DEVICE_MIN_FREE_FRACTION", "0.9")
    report = DeviceReport("cuda:0", True, free_bytes=120 * GiB, **H200)
    assert devices.min_free_fraction() == 0.9 and device_fault(report) is not None
    monkeypatch.setenv("RUNNER_DEVICE_MIN_FREE_FRACTION", "lots")
    assert devices.min_free_fraction() == devices.DEFAULT_MIN_FREE_FRACTION


@pytest.mark.parametrize("kind", sorted(ERROR_KINDS - devices.DEVICE_SUSPECT_KINDS))
def test_kinds_a_device_cannot_cause_are_never_put_on_the_device(kind):
    error = EvaluationError(kind, "the logits have shape [256, 7]")
    started = time.monotonic()
    assert blame(error, absent_cuda_device()) is error
    assert time.monotonic() - started < 1  # decided without probing the device


@pytest.mark.parametrize("kind", sorted(devices.DEVICE_SUSPECT_KINDS))
def test_a_failure_on_the_cpu_stays_the_submissions_whatever_it_says(kind):
    error = EvaluationError(kind, "CUDA error: unspecified launch failure")
    assert blame(error, "cpu") is error


def test_a_failure_on_a_cuda_device_this_machine_lacks_is_a_device_error_keeping_the_original():
    error = EvaluationError(ErrorKind.RUNTIME_ERROR, "device cuda was asked for but CUDA is not available", "tail")
    blamed = blame(error, absent_cuda_device())
    assert blamed.kind == ErrorKind.DEVICE_ERROR and blamed.log_tail == "tail"
    assert "runtime_error: device cuda was asked for" in blamed.message


# --------------------------------------------------------------------------------------------
# On a GPU (skipped elsewhere: the device tool's H200 runs them).
# --------------------------------------------------------------------------------------------
gpu_only = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")


def _gpu_job(site, job_id: int, module: torch.nn.Module, tmp_path: Path) -> Job:
    job = Job(job_id, "digits", model_bytes(module, tmp_path), {}, kind="classifier")
    site.jobs[job_id] = job
    return job


@gpu_only
def test_on_a_healthy_gpu_a_model_that_blames_the_driver_is_still_a_runtime_error(site, client, tmp_path):
    job = _gpu_job(site, 21, SaysTheDriverFailed(), tmp_path)
    assert process_job(21, client, data_root=tmp_path, device="cuda") == "failed"
    assert job.failures[0]["kind"] == ErrorKind.RUNTIME_ERROR


@gpu_only
def test_on_a_healthy_gpu_a_model_bigger_than_the_device_is_out_of_memory(site, client, tmp_path):
    total = torch.cuda.mem_get_info()[1]
    job = _gpu_job(site, 22, Allocates(2 * total), tmp_path)
    assert process_job(22, client, data_root=tmp_path, device="cuda") == "failed"
    assert job.failures[0]["kind"] == ErrorKind.OUT_OF_MEMORY


@gpu_only
def test_on_a_gpu_another_process_fills_an_out_of_memory_is_a_device_error(site, client, tmp_path):
    free, total = torch.cuda.mem_get_info()
    hog = subprocess.Popen([sys.executable, "-c", (
        "import sys, time, torch\n"
        f"held = torch.empty([{int(free * 0.8)}], dtype=torch.uint8, device='cuda')\n"
        "print('holding', flush=True)\n"
        "time.sleep(600)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert hog.stdout is not None and hog.stdout.readline().strip() == "holding"
        job = _gpu_job(site, 23, Allocates(int(total * 0.3)), tmp_path)
        assert process_job(23, client, data_root=tmp_path, device="cuda") == "failed"
        failure = job.failures[0]
        assert failure["kind"] == ErrorKind.DEVICE_ERROR and "other processes hold" in failure["message"]
    finally:
        hog.kill()
        hog.wait()
