"""The sandboxed model server on its own: warm servers kept per submission and closed when idle,
several inputs in and outputs bigger than their slot out (what the denoising track will need),
and the child's uint8 wire format."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
import torch

from runner.evaluate import file_sha256
from runner.sandboxed import model_server
from runner.serve import ServerSettings

from .classifier_models import save_onnx, save_torchscript


class Tiled(torch.nn.Module):
    """[N, 1, 8, 8] → [N, 2560]: 10 KiB per image, more than a slot keeps for outputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).repeat(1, 40)


class ScaledByNoise(torch.nn.Module):
    """A denoiser-shaped module with two inputs: the image and a per-image [N, 2] setting."""

    def __init__(self):
        super().__init__()
        self.wants_noise_level = True

    def forward(self, noisy: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return noisy * noise[:, 1].view(-1, 1, 1, 1)



def settings_for(path, fmt: str) -> ServerSettings:
    return ServerSettings(sha256=file_sha256(path), fmt=fmt, device="cpu", threads=1)


def collect(server, batches, max_items: int = 64) -> dict:
    got: dict = {}

    def keep(tag, lo, hi, outputs):
        got[(tag, lo)] = outputs.copy()

    server.stream(iter(batches), keep, max_items=max_items)
    return got


def test_a_warm_server_serves_the_next_job_of_its_submission_and_closes_when_idle(pool, tmp_path):
    path = save_onnx(Tiled(), tmp_path / "tiled.onnx", (1, 8, 8))
    settings = settings_for(path, "onnx")
    x = np.random.default_rng(0).random((100, 1, 8, 8), dtype=np.float32)
    with pool.borrow(path, settings) as (first, reused):
        assert not reused
        got = collect(first, [(x, "a")])
    with pool.borrow(path, settings) as (second, reused):
        assert reused and second is first
        got.update(collect(second, [(x[:30], "b")]))
    assert pool.loads == 1 and pool.idle_count() == 1
    # Outputs bigger than a slot come back inline, whole.
    assert np.array_equal(
        np.concatenate([got[("a", 0)], got[("a", 64)]]), np.tile(x.reshape(100, 64), (1, 40))
    )
    assert np.array_equal(got[("b", 0)], np.tile(x[:30].reshape(30, 64), (1, 40)))
    deadline = time.monotonic() + 10
    while (pool.idle_count() or first.alive) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pool.idle_count() == 0 and not first.alive


def test_another_submission_replaces_the_idle_server_and_a_failed_job_discards_its_server(pool, tmp_path):
    a = save_onnx(Tiled(), tmp_path / "a.onnx", (1, 8, 8))
    b = save_onnx(Tiled(), tmp_path / "b.onnx", (1, 8, 8))
    settings_a = settings_for(a, "onnx")
    settings_b = ServerSettings(sha256="b" * 64, fmt="onnx", device="cpu", threads=1)
    with pool.borrow(a, settings_a) as (server_a, _):
        pass
    with pool.borrow(b, settings_b) as (server_b, reused):
        assert not reused and not server_a.alive  # one model at a time
    with pytest.raises(RuntimeError), pool.borrow(b, settings_b) as (again, reused):
        assert reused and again is server_b
        raise RuntimeError("the job failed")
    assert not server_b.alive and pool.idle_count() == 0 and pool.loads == 2


def test_several_inputs_go_in_and_a_same_shape_output_comes_back_through_shared_memory(pool, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = save_torchscript(ScaledByNoise(), tmp_path / "denoiser.pt")
    rng = np.random.default_rng(1)
    noisy = rng.random((10, 3, 16, 16), dtype=np.float32)
    noise = np.tile(np.array([[0.0, 2.5]], dtype=np.float32), (10, 1))
    with pool.borrow(path, settings_for(path, "torchscript")) as (server, _):
        assert server.info["inputs"] == 2 and server.info["attributes"] == {"wants_noise_level": True}
        got = collect(server, [((noisy, noise), "x")], max_items=4)
    out = np.concatenate([got[("x", lo)] for lo in (0, 4, 8)])
    assert out.dtype == np.float32 and np.array_equal(out, noisy * np.float32(2.5))


def test_the_child_turns_uint8_inputs_and_their_scale_into_the_same_floats_as_the_parent(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = save_torchscript(Tiled(), tmp_path / "tiled.pt")
        model = model_server.load_model(str(path), "torchscript", "cpu", threads=1)
    model.configure()
    pixels = np.random.default_rng(2).integers(0, 256, (5, 1, 8, 8), dtype=np.uint8)
    as_floats = pixels.astype(np.float32) / np.float32(255)
    assert np.array_equal(model.predict([pixels], [255.0]), model.predict([as_floats], [None]))


class SmallConv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def test_channels_last_is_kept_only_when_the_model_gives_the_same_outputs_and_bf16_is_opt_in(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = save_torchscript(SmallConv(), tmp_path / "conv.pt")
        plain = model_server.load_model(str(path), "torchscript", "cpu", threads=1)
        tried = model_server.load_model(str(path), "torchscript", "cpu", threads=1)
        halved = model_server.load_model(str(path), "torchscript", "cpu", threads=1)
    assert plain.configure()["memory_format"].startswith("contiguous")  # off by default on the CPU
    assert tried.configure(channels_last="on")["memory_format"].startswith("channels_last (checking")
    x = np.random.default_rng(3).random((4, 3, 16, 16), dtype=np.float32)
    reference = plain.predict([x], [None])
    assert np.array_equal(tried.predict([x], [None]), reference)  # the first batch: the contiguous answer
    assert tried.memory_format == "channels_last" and tried.notes["memory_format"] == "channels_last"
    np.testing.assert_allclose(tried.predict([x], [None]), reference, rtol=1e-4, atol=1e-5)
    assert halved.configure(precision="bf16")["precision"] == "bf16"
    low = halved.predict([x], [None])
    assert low.dtype == np.float32 and not np.array_equal(low, reference)
    np.testing.assert_allclose(low, reference, rtol=0.05, atol=0.05)
