"""A classifier result carries what the weighted rankings weigh (issue 19 item 4): the model's
parameter count, the sandboxed model server's peak memory with how it was measured, and the
throughput; `runner run` on fake CIFAR-10 with a TorchScript and an ONNX model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from runner import datasets
from runner.serve.settings import default_memory_bytes
from runner.tracks.footprint import CUDA_SOURCE, footprint

from .classifier_models import save_onnx, save_torchscript

RUNNER = str(Path(sys.executable).parent / "runner")
MIB = 1024 ** 2


@pytest.mark.usefixtures("bwrap")
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_runner_run_records_parameters_memory_and_throughput(fmt, tmp_path):
    datasets.get("cifar-10-batches-py").fake(tmp_path / "data")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                 torch.nn.Linear(4, 10)).eval()
    expected = 3 * 4 * 9 + 4 + 4 * 10 + 10  # 162 weights and biases
    model = (save_torchscript(module, tmp_path / "m.pt") if fmt == "torchscript"
             else save_onnx(module, tmp_path / "m.onnx", (3, 32, 32)))
    done = subprocess.run([RUNNER, "run", "--task", "cifar10", "--artifact", str(model), "--data-root",
                           str(tmp_path / "data"), "--out", str(tmp_path / "result.json")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "RUNNER_WORK_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    env = result["env"]
    assert env["parameters"] == expected
    memory = env["memory"]
    # Python with torch or onnxruntime is tens of MiB resident at least; the sandbox's limit bounds the peak.
    assert 30 * MIB < memory["peak_bytes"] < memory["limit_bytes"] == default_memory_bytes()
    assert memory["source"].startswith("ru_maxrss of the sandboxed model server process")
    assert result["timing"]["items_per_s"] > 0
    # The site reads the very keys the runner wrote (leaderboard/boards/services.py, no database).
    from leaderboard.boards.services import _footprint, _parameters

    assert _parameters(result) == expected
    assert _footprint(result) == {"throughput": result["timing"]["items_per_s"],
                                  "peak_memory_bytes": memory["peak_bytes"], "memory_limit_bytes": memory["limit_bytes"]}


def test_on_a_gpu_the_peak_is_the_devices_tensors_against_its_memory():
    info = {"device": "cuda:0", "parameters": 11_689_512, "peak_rss_bytes": 3 << 30, "peak_cuda_bytes": 900 << 20,
            "device_memory_bytes": 80 << 30}
    assert footprint(info, "cuda:0", 64 << 30) == {"parameters": 11_689_512, "memory": {
        "peak_bytes": 900 << 20, "limit_bytes": 80 << 30, "source": CUDA_SOURCE,
        "reported_by": "the model server (it runs the submission: not forgery-proof)"}}


def test_what_the_server_did_not_say_is_none_not_zero():
    assert footprint({"device": "cpu", "parameters": True, "peak_rss_bytes": -5}, "cpu", 6 << 30) == {
        "parameters": None, "memory": None}
