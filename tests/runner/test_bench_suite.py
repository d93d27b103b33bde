"""`runner bench --suite gpu` as CI can run it: on the CPU, quick sizes, every figure present and
positive, the GPU-only parts named as skipped rather than crashing, the JSON written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RUNNER = str(Path(sys.executable).parent / "runner")
FIGURES = ("cifar_eval_over_forward", "imagenet_eval_over_forward", "train_harness_over_step",
           "sandboxed_over_trusted", "end_to_end_job")


@pytest.mark.usefixtures("bwrap")
def test_the_gpu_suite_runs_end_to_end_on_the_cpu_and_reports_every_figure_against_its_goal(tmp_path):
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [RUNNER, "bench", "--suite", "gpu", "--device", "cpu", "--quick", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=400,
        env={**{k: v for k, v in os.environ.items() if not k.startswith(("RUNNER_", "CELERY_"))},
             "COLUMNS": "220", "RUNNER_WORK_DIR": str(tmp_path), "TMPDIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    report = json.loads(out.read_text())
    figures = {f["key"]: f for f in report["figures"]}
    assert tuple(figures) == FIGURES
    for key, figure in figures.items():
        assert figure["error"] == "" and figure["value"] > 0, (key, figure)
    assert [f["goal"] for f in report["figures"]] == [0.95, 0.9, 0.95, 0.95, None]
    job = report["measurements"]["end_to_end"]
    assert job["outcome"] == "succeeded" and job["pool"] == "gpu" and job["node_pools"] == ["gpu"]
    assert job["sandbox"] == "bwrap"
    # The GPU-only parts say why they were left out, in the output and in the file.
    assert done.stdout.count("skipped on cpu: needs CUDA") == 2, done.stdout
    assert sum("skipped on cpu: needs CUDA" in note for note in report["notes"]) == 2
    for label in ("CIFAR ResNet-18 evaluation ÷ pure forward", "opt-cifar10-resnet18 harness ÷ pure training step",
                  "sandboxed ÷ trusted evaluation on cpu", "one cifar10 job through runner work, pool gpu"):
        assert label in done.stdout, done.stdout
    assert f"figures written to {out}" in done.stdout
