"""A runner asked for a device it does not have refuses to start, says what to start instead,
and never reaches the broker or the site: `runner work`, `runner run` and `runner check` as an
operator types them on this machine."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import typer

from runner.cli.common import usable_device
from runner.devices import parse_device, probe, resolve_device

from . import sources

RUNNER = str(Path(sys.executable).parent / "runner")
CUDA = torch.cuda.is_available()
# A CUDA device this machine lacks: any on a machine without CUDA, else one past the last GPU.
ABSENT = f"cuda:{torch.cuda.device_count()}" if CUDA else "cuda:3"
no_cuda_here = pytest.mark.skipif(CUDA, reason="this machine has CUDA: a gpu pool is servable here")


def runner_command(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RUNNER_DEVICE", "RUNNER_POOLS", "CELERY_BROKER_URL")}
    return subprocess.run([RUNNER, *args], cwd=cwd, capture_output=True, text=True, timeout=180,
                          env={**env, "COLUMNS": "400"})


@pytest.fixture
def listener():
    """A TCP port standing in for the broker and the site: the test checks nobody knocked."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def knocked(sock: socket.socket) -> bool:
    try:
        sock.accept()[0].close()
    except BlockingIOError:
        return False
    return True


def work(listener: socket.socket, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    port = listener.getsockname()[1]
    return runner_command("work", "--server", f"http://127.0.0.1:{port}", "--token", "t",
                          "--broker", f"redis://127.0.0.1:{port}/0", "--data-root", str(cwd), *args, cwd=cwd)


@no_cuda_here
@pytest.mark.usefixtures("bwrap")
def test_a_runner_serving_the_gpu_pool_without_cuda_refuses_to_start_and_says_to_use_the_cpu(tmp_path, listener):
    done = work(listener, "--pool", "gpu", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "serves the gpu pool" in done.stderr and "cannot use cuda" in done.stderr
    assert "CUDA is not available" in done.stderr
    assert "runner work --pool gpu --device cpu" in done.stderr and "Nothing was claimed" in done.stderr
    assert not knocked(listener)


@pytest.mark.usefixtures("bwrap")
def test_a_runner_asked_for_a_cuda_device_it_lacks_refuses_to_start_before_reaching_the_broker(tmp_path, listener):
    done = work(listener, "--pool", "cpu", "--device", ABSENT, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"--device {ABSENT} was asked for, but this machine cannot use it" in done.stderr
    assert "--device cpu" in done.stderr
    if CUDA:
        assert f"{ABSENT} does not exist" in done.stderr
    assert not knocked(listener)


def test_a_device_name_that_is_no_device_is_refused_with_the_names_that_are(tmp_path, listener):
    done = work(listener, "--device", "gpu", cwd=tmp_path)
    assert done.returncode == 2 and "unknown device 'gpu': use cpu, cuda (the first GPU) or cuda:N" in done.stderr
    assert not knocked(listener)


@pytest.mark.usefixtures("bwrap")
def test_runner_run_refuses_a_cuda_device_it_lacks_before_evaluating(tmp_path, write_submission):
    done = runner_command("run", "--task", "opt-f1", "--artifact", str(write_submission(sources.SGD)),
                          "--device", ABSENT, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"--device {ABSENT} was asked for" in done.stderr and "with --device cpu" in done.stderr
    assert "Nothing was claimed" not in done.stderr  # a dry run claims nothing anyway
    assert not list(tmp_path.glob("result-*.json"))


@no_cuda_here
@pytest.mark.usefixtures("bwrap")
def test_runner_check_for_the_gpu_pool_without_cuda_fails_and_says_to_use_the_cpu(tmp_path):
    done = runner_command("check", "--pool", "gpu", "--data-root", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 1
    assert "NOT USABLE" in done.stdout and "(implied by the gpu pool)" in done.stdout
    assert "start `runner work` with --device cpu" in done.stderr


def test_serving_the_gpu_pool_on_the_cpu_is_allowed_when_asked_for_explicitly():
    assert resolve_device("cpu", ["gpu"]) == ("cpu", False)
    assert resolve_device(None, ["cpu", "gpu"]) == ("cuda", True)
    assert resolve_device(None, ["cpu"]) == ("cpu", False)
    assert usable_device("cpu", ["gpu"], "runner work") == "cpu"
    assert probe("cpu").usable


def test_device_names_are_normalised_and_anything_else_is_refused():
    assert parse_device(" CUDA:1 ") == "cuda:1" and parse_device("cpu") == "cpu"
    for bad in ("gpu", "mps", "cuda:-1", "cuda:x", "", "cpu:0"):
        with pytest.raises(ValueError, match="use cpu, cuda"):
            parse_device(bad)


@no_cuda_here
@pytest.mark.usefixtures("bwrap")
def test_the_gpu_pool_implied_cuda_is_checked_in_process_too():
    with pytest.raises(typer.Exit) as stopped:
        usable_device(None, ["gpu"], "runner work")
    assert stopped.value.exit_code == 2
