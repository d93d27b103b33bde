"""`runner bench` as an operator runs it: both ratios printed, each the quotient of the rates it compares."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from runner.baselines.classifiers import FOLDER

RUNNER = str(Path(sys.executable).parent / "runner")


@pytest.mark.usefixtures("bwrap")
def test_runner_bench_prints_evaluation_over_forward_and_sandboxed_over_trusted(tmp_path):
    done = subprocess.run(
        [
            RUNNER,
            "bench",
            "--task",
            "digits",
            "--artifact",
            str(FOLDER / "digits_cnn.onnx"),
            "--batches",
            "3",
            "--batch-size",
            "64",
            "--repeats",
            "2",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "COLUMNS": "160", "RUNNER_WORK_DIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    ratio, rate = {}, {}
    for label in ("evaluation ÷ pure forward", "sandboxed ÷ trusted"):
        found = re.search(rf"^ratio {label}: ([0-9.]+)$", done.stdout, re.MULTILINE)
        assert found, done.stdout
        ratio[label] = float(found.group(1))
    for line in ("pure forward (trusted, in-process)", "evaluation, trusted (in-process)",
                 "evaluation, sandboxed (bwrap)"):
        found = re.search(rf"{re.escape(line)}\s+([0-9.]+) items/s", done.stdout)
        assert found, done.stdout
        rate[line] = float(found.group(1))
    # Each ratio is the quotient of the two rates printed above it (to the printed precision).
    sandboxed = rate["evaluation, sandboxed (bwrap)"]
    assert ratio["evaluation ÷ pure forward"] == pytest.approx(
        sandboxed / rate["pure forward (trusted, in-process)"], rel=0.01, abs=0.002), done.stdout
    assert ratio["sandboxed ÷ trusted"] == pytest.approx(
        sandboxed / rate["evaluation, trusted (in-process)"], rel=0.01, abs=0.002), done.stdout
    assert "batch 64, 3 batches after a warm-up batch, best of 2 rounds" in done.stdout


@pytest.mark.usefixtures("bwrap")
def test_runner_bench_on_a_denoising_task_times_the_same_images_three_ways(tmp_path):
    from runner.bench import bench

    artifact = Path(FOLDER).parent / "denoisers" / "median-filter.pt"
    report = bench("denoise-skimage-color-poisson0.05", artifact, device="cpu", data_root=tmp_path, repeats=1)
    assert report["items_in_dataset"] == 6 and report["batches"] == 5 and report["noise_level_input"] is True
    assert report["sandbox"] == "bwrap" and report["synthetic_data"] is False
    for key in ("forward_items_per_s", "trusted_eval_items_per_s", "sandboxed_eval_items_per_s"):
        assert report[key] > 0, report
    assert report["eval_over_forward"] == pytest.approx(
        report["sandboxed_eval_items_per_s"] / report["forward_items_per_s"])
