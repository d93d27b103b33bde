"""An operator's SIGTERM ends a `runner run` as Ctrl-C would: the sandboxed model server is
killed and its folder and scratch volume are removed at once, not left for the next `runner work`
to sweep (they leaked before: Python's default SIGTERM skips every ``finally``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings

import torch

from runner import host_limits


class SlowDigits(torch.nn.Module):
    """A digits classifier (float32 [N, 1, 8, 8] → [N, 10]) that takes seconds a batch, so the
    run is surely still evaluating when the signal comes."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.inp = torch.nn.Parameter(torch.randn(64, 1024, generator=generator) / 8)
        self.hidden = torch.nn.Parameter(torch.randn(1024, 1024, generator=generator) / 32)
        self.out = torch.nn.Parameter(torch.randn(1024, 10, generator=generator) / 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(x.flatten(1) @ self.inp)
        for _ in range(400):
            h = torch.tanh(h @ self.hidden)
        return h @ self.out


def test_sigterm_removes_the_model_servers_folder_and_scratch_mount(tmp_path):
    artifact = tmp_path / "slow.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice
        torch.jit.save(torch.jit.script(SlowDigits().eval()), str(artifact))
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "RUNNER_WORK_DIR": str(work), "RUNNER_SALIENCY": "off"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runner.cli",
            "run",
            "--task",
            "digits",
            "--artifact",
            str(artifact),
            "--out",
            str(tmp_path / "r.json"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not any(p.name.startswith("runner-model-") for p in work.iterdir()):
            assert proc.poll() is None, (
                f"the run ended before its model server started:\n{proc.communicate()[0]}"
            )
            assert time.monotonic() < deadline, "no model server folder after 120 s"
            time.sleep(0.05)
        time.sleep(1.0)  # the sandbox is up and evaluating
        mounted_before = host_limits.mounts_under(work)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert not (tmp_path / "r.json").exists()
    assert list(work.iterdir()) == [], output
    assert host_limits.mounts_under(work) == []
    if host_limits.can_mount():  # a root runner mounted a scratch tmpfs: the check above saw it go
        assert mounted_before, "a root runner should have mounted the scratch tmpfs"
