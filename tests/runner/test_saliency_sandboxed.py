"""Saliency through the sandboxed model server and a whole `runner run` (issue 17 item 5): the maps
the child computes are the ones runner/saliency.py computes in-process, a model whose gradients
fail leaves the result whole with the error recorded, the sample is the one documented, and the
operator's switch turns it off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import torch

from runner import saliency, saliency_sample
from runner.evaluate import file_sha256
from runner.serve import ServerSettings

from .classifier_models import (
    DigitsConvNet,
    save_onnx,
    save_onnx_as_exported,
    save_pt2,
    save_pt2_as_exported,
    save_torchscript,
)


class NoGradients(torch.nn.Module):
    """Logits computed without autograd: any gradient method fails on it."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.fc(x.flatten(1))


class NaNGradients(torch.nn.Module):
    """Finite logits whose gradients are NaN: 0·Σ√(a − a) adds 0 to them, but √'s derivative at 0
    is infinite and 0·∞ is NaN, at the convolution's output and at the input alike."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x)
        return self.fc(a.relu().flatten(1)) + 0 * torch.sqrt(a - a).sum()


class NoConvolution(torch.nn.Module):
    """A linear classifier of digits: no layer for the CAM methods to look at."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def explained(pool: Any, path: Any, fmt: str, n: int = 12) -> dict[str, Any]:
    """explain_task's entry for the model at ``path`` on the first ``n`` digits images, a
    sandboxed server of format ``fmt`` (half the images counted as failures)."""
    x = digits_images(n)
    arrays = {
        "index": np.arange(n),
        "label": np.arange(n) % 10,
        "pred": np.arange(n) % 10 * (np.arange(n) % 2),
    }
    data = type("Data", (), {"parts": {"main": digits_reader(x)}})()
    settings = ServerSettings(sha256=file_sha256(path), fmt=fmt, device="cpu", threads=1)
    with pool.borrow(path, settings) as (server, _):
        entry = saliency_sample.explain_task(server, "digits", data, arrays, evaluation_s=1000.0)
    assert entry is not None and entry["format"] == 2
    return entry


def digits_images(n: int) -> np.ndarray:
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]

    return (load_digits().images[:n] / 16.0).astype(np.float32)[:, None]


def test_the_sandbox_computes_the_maps_runner_saliency_computes_in_process(pool, tmp_path):
    model = DigitsConvNet().eval()
    x = digits_images(5)
    request = {"method": "auto", "targets": None, "fill": None, "side": 16}
    ts = save_torchscript(model, tmp_path / "digits.pt")
    with pool.borrow(
        ts, ServerSettings(sha256=file_sha256(ts), fmt="torchscript", device="cpu", threads=1)
    ) as (
        server,
        _,
    ):
        maps, told = server.saliency(x, request)
    expected = saliency.smoothgrad(torch.jit.load(str(ts)).eval(), torch.from_numpy(x))
    assert maps.shape == (5, 16, 16) and maps.dtype == np.uint8
    assert told["saliency_method"] == "smoothgrad" and json.loads(told["saliency_params"])["copies"] == 50
    assert np.abs(maps.astype(int) - saliency.quantize(expected.maps).astype(int)).max() <= 1
    assert json.loads(told["saliency_targets"]) == expected.target.tolist()

    onnx = save_onnx(model, tmp_path / "digits.onnx", (1, 8, 8))
    with pool.borrow(onnx, ServerSettings(sha256=file_sha256(onnx), fmt="onnx", device="cpu", threads=1)) as (
        server,
        _,
    ):
        maps, told = server.saliency(x, {**request, "fill": [0.3], "targets": [1, 2, 3, 4, 5]})
    with torch.no_grad():
        expected = saliency.occlusion(
            lambda b: model(torch.from_numpy(b)), x, fill=[0.3], target=[1, 2, 3, 4, 5]
        )
    assert told["saliency_method"] == "occlusion"
    assert json.loads(told["saliency_params"]) == {
        "window": 2,
        "stride": 1,
        "fill": [0.3],
        "score": "probability",
    }
    assert np.abs(maps.astype(int) - saliency.quantize(expected.maps).astype(int)).max() <= 2


def test_an_exported_program_gets_gradcampp_on_its_last_convolution_in_the_sandbox(pool, tmp_path):
    model = DigitsConvNet().eval()
    x = digits_images(4)
    path = save_pt2(model, tmp_path / "digits.pt2", (1, 8, 8))
    settings = ServerSettings(sha256=file_sha256(path), fmt="pt2", device="cpu", threads=1)
    with pool.borrow(path, settings) as (server, _):
        maps, told = server.saliency(x, {"method": "auto", "targets": None, "fill": None, "side": 16})
    expected = saliency.gradcampp(model, torch.from_numpy(x), layer="conv")
    assert (told["saliency_method"], told["saliency_layer"]) == ("gradcam++", "conv")
    assert np.abs(maps.astype(int) - saliency.quantize(expected.maps).astype(int)).max() <= 1


def test_a_model_without_gradients_keeps_its_result_and_records_why_it_has_no_maps(pool, tmp_path):
    path = save_torchscript(NoGradients().eval(), tmp_path / "nograd.pt")
    x = digits_images(40)
    arrays = {"index": np.arange(40), "label": np.arange(40) % 10, "pred": np.zeros(40, dtype=np.int64)}
    data = type("Data", (), {"parts": {"main": digits_reader(x)}})()
    settings = ServerSettings(sha256=file_sha256(path), fmt="torchscript", device="cpu", threads=1)
    with pool.borrow(path, settings) as (server, _):
        entry = saliency_sample.explain_task(server, "digits", data, arrays, evaluation_s=100.0)
    assert (
        entry is not None
        and entry["rows"] == []
        and [m["method"] for m in entry["methods"]] == ["smoothgrad"]
    )
    (method,) = entry["methods"]
    assert method["rows"] == [] and method["maps"] == ""
    assert "computing saliency maps failed" in method["error"] and "grad" in method["error"]


def digits_reader(x: np.ndarray) -> Any:
    """An ArrayReader holding float images ``x`` [N, 1, 8, 8] as digits' 0–16 grey levels."""
    from runner.datasets.base import Targets
    from runner.datasets.readers import ArrayReader

    images = np.rint(x[:, 0, :, :, None] * 16).astype(np.uint8)
    return ArrayReader("digits", images, Targets(labels=np.zeros(len(x), dtype=np.int64)), {}, divisor=16.0)


def test_the_sample_takes_failures_and_successes_per_group_within_the_cap():
    rng = np.random.default_rng(3)
    n = 2000
    region = np.array(["Africa", "Americas", "Asia", "Europe"])[rng.integers(0, 4, n)]
    label = rng.integers(0, 10, n)
    pred = np.where(rng.random(n) < 0.3, (label + 1) % 10, label)
    arrays = {"index": np.arange(n), "label": label, "pred": pred, "region": region}
    rows = saliency_sample.sample_rows(arrays)
    assert len(rows) == 64 and len(set(rows.tolist())) == 64  # 4 regions × (8 + 8)
    for name in np.unique(region):
        here = region[rows] == name
        assert (pred[rows][here] != label[rows][here]).sum() == 8 and here.sum() == 16
    assert np.array_equal(rows, saliency_sample.sample_rows(arrays))  # the same images each run
    # Many groups: the cap holds and every group gets its turn before any gets a second image.
    many = {**arrays, "region": np.array([f"r{i % 100}" for i in range(n)])}
    assert len(np.unique(many["region"][saliency_sample.sample_rows(many)])) == 64


def test_the_operator_switch_turns_saliency_off(monkeypatch):
    monkeypatch.setenv("RUNNER_SALIENCY", "off")
    arrays = {"index": np.arange(3), "label": np.zeros(3), "pred": np.zeros(3)}
    assert saliency_sample.explain_task(object(), "digits", None, arrays, evaluation_s=1.0) is None
    monkeypatch.setenv("RUNNER_SALIENCY", "on")
    assert saliency_sample.enabled()


def test_runner_run_on_digits_puts_bounded_maps_of_failures_and_successes_in_the_result(bwrap, tmp_path):
    path = save_torchscript(DigitsConvNet().eval(), tmp_path / "digits.pt")
    out = tmp_path / "R.json"
    env = {**os.environ, "RUNNER_WORK_DIR": str(tmp_path)}
    env.pop("RUNNER_SALIENCY", None)
    command = [
        sys.executable,
        "-m",
        "runner.cli",
        "run",
        "--task",
        "digits",
        "--artifact",
        str(path),
        "--out",
        str(out),
    ]
    subprocess.run(command, check=True, env=env, capture_output=True, timeout=600)
    result = json.loads(out.read_text())
    entry = result["saliency"]
    per_image = np.load(tmp_path / "R.per_image.npz", allow_pickle=False)
    rows = np.asarray(entry["rows"], dtype=np.int64)
    assert 1 <= len(rows) <= entry["requested"] <= saliency_sample.MAX_ROWS
    assert entry["side"] == 16 and "error" not in entry and entry["asked"] == "auto"
    (method,) = entry["methods"]
    assert method["method"] == "smoothgrad" and "error" not in method and method["rows"] == entry["rows"]
    maps = saliency_sample.decode_maps({**method, "side": 16})
    assert maps.shape == (len(rows), 16, 16) and (maps.reshape(len(rows), -1).max(axis=1) >= 250).all()
    assert entry["index"] == per_image["index"][rows].tolist()
    assert entry["failure"] == (per_image["pred"][rows] != per_image["label"][rows]).tolist()
    assert entry["target"] == per_image["pred"][rows].tolist()
    # The bound: one first request of FIRST_CHUNK images may pass it, never by a further request.
    assert len(rows) == saliency_sample.FIRST_CHUNK or entry["seconds"] <= entry["budget_s"] + 5

    off = tmp_path / "off.json"
    subprocess.run(
        [*command[:-1], str(off), "--no-saliency"], check=True, env=env, capture_output=True, timeout=600
    )
    assert "saliency" not in json.loads(off.read_text())


@pytest.mark.parametrize("slug", ["cifar10-c", "dollarstreet"])
def test_the_images_sent_are_exactly_what_evaluation_fed_the_model(slug, tmp_path):
    from runner import datasets
    from runner.catalogue import catalogue_task

    datasets.get(catalogue_task(slug).dataset).fake(tmp_path)
    reader = datasets.open_task(slug, tmp_path).main
    fed = np.concatenate([np.asarray(b.inputs) for b in reader.batches(7, device="cpu")])
    positions = np.array([len(reader) - 1, 0, len(reader) // 2])
    sent = saliency_sample.inputs_at(reader, positions)
    assert sent is not None and sent.dtype == np.float32
    assert np.array_equal(sent, fed[positions])


def test_an_exported_program_carries_every_layer_method_on_the_same_images(pool, tmp_path):
    model = DigitsConvNet().eval()
    entry = explained(pool, save_pt2(model, tmp_path / "digits.pt2", (1, 8, 8)), "pt2")
    assert entry["asked"] == "auto" and "error" not in entry
    methods = {m["method"]: m for m in entry["methods"]}
    assert list(methods) == ["gradcam++", "normgrad", "smooth-gradcam++"]  # cheapest first
    x = torch.from_numpy(digits_images(12))
    targets = (np.arange(12) % 10 * (np.arange(12) % 2)).tolist()
    expected = {
        "gradcam++": saliency.gradcampp(model, x, layer="conv", target=targets),
        "normgrad": saliency.normgrad(model, x, layer="conv", target=targets),
    }
    # requests of 2 then 10 images: the same maps as one call (the noise does not depend on the batch)
    expected["smooth-gradcam++"] = saliency.smooth_gradcampp(model, x, layer="conv", target=targets)
    for name, method in methods.items():
        assert "error" not in method and "skipped" not in method, method
        assert method["rows"] == entry["rows"] == list(range(12)) and method["layer"] == "conv"
        maps = saliency_sample.decode_maps({**method, "side": entry["side"]})
        want = saliency.quantize(expected[name].maps).astype(int)
        assert np.abs(maps.astype(int) - want).max() <= 1, name
    assert methods["smooth-gradcam++"]["params"]["copies"] == 20
    assert methods["normgrad"]["params"]["selective"] is True
    assert set(saliency_sample.method_maps(entry)) == set(methods)


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_a_model_exported_with_a_fixed_batch_gets_maps_fed_exactly_its_batch(pool, tmp_path, fmt):
    """5 images for a batch of 4: one full piece and one padded with repeats, the padding's
    maps dropped; the maps are those of the unexported model on the same pieces."""
    model = DigitsConvNet().eval()
    save = save_onnx_as_exported if fmt == "onnx" else save_pt2_as_exported
    path = save(model, tmp_path / f"fixed.{fmt}", (4, 1, 8, 8))
    x = digits_images(5)
    targets = [3, 1, 4, 1, 5]
    settings = ServerSettings(sha256=file_sha256(path), fmt=fmt, device="cpu", threads=1)
    names = (
        ["occlusion"]
        if fmt == "onnx"
        else ["gradcam++", "normgrad", "smooth-gradcam++", "smoothgrad", "occlusion"]
    )
    got = {}
    with pool.borrow(path, settings) as (server, _):
        for name in names:
            request = {"method": name, "targets": targets, "fill": [0.3], "side": 16}
            got[name] = server.saliency(x, request)[0]
    padded = torch.from_numpy(np.concatenate([x[4:], x[4:], x[4:], x[4:]]))
    pieces = [(torch.from_numpy(x[:4]), targets[:4]), (padded, [5] * 4)]
    for name in names:
        if name == "occlusion":
            with torch.no_grad():
                one = [
                    saliency.occlusion(lambda b: model(torch.from_numpy(b)), p, fill=[0.3], target=t)
                    for p, t in pieces
                ]
        else:
            layer = {} if name == "smoothgrad" else {"layer": "conv"}
            copies = {"max_batch": 4} if name in ("smoothgrad", "smooth-gradcam++") else {}
            one = [saliency.explain(name, model, p, target=t, **layer, **copies) for p, t in pieces]
        want = saliency.quantize(np.concatenate([one[0].maps, one[1].maps[:1]])).astype(int)
        assert got[name].shape == (5, 16, 16)
        assert np.abs(got[name].astype(int) - want).max() <= 2, name


def test_nan_gradients_give_each_method_an_error_and_leave_the_result_whole(pool, tmp_path):
    entry = explained(pool, save_pt2(NaNGradients().eval(), tmp_path / "nan.pt2", (1, 8, 8)), "pt2")
    names = [m["method"] for m in entry["methods"]]
    assert names == ["gradcam++", "normgrad", "smooth-gradcam++", "smoothgrad"]  # the last: auto's fallback
    for method in entry["methods"]:
        assert method["rows"] == [] and "not finite" in method["error"], method
    assert entry["rows"] == [] and entry["requested"] == 12


def test_a_model_without_convolutions_falls_back_to_input_gradients_under_auto(pool, tmp_path):
    entry = explained(pool, save_pt2(NoConvolution().eval(), tmp_path / "linear.pt2", (1, 8, 8)), "pt2")
    names = [m["method"] for m in entry["methods"]]
    assert names == ["gradcam++", "normgrad", "smooth-gradcam++", "smoothgrad"]
    for refused in entry["methods"][:3]:
        assert refused["rows"] == [] and "convolution" in refused["error"], refused
    assert (
        entry["methods"][3]["rows"] == entry["rows"] == list(range(12)) and "error" not in entry["methods"][3]
    )


def test_the_operators_list_runs_what_the_format_can_and_records_the_rest_as_skipped(
    pool, tmp_path, monkeypatch
):
    model = DigitsConvNet().eval()
    monkeypatch.setenv("RUNNER_SALIENCY_METHODS", "gradcam++,occlusion")
    entry = explained(pool, save_onnx(model, tmp_path / "digits.onnx", (1, 8, 8)), "onnx")
    assert entry["asked"] == ["gradcam++", "occlusion"]
    occlusion, gradcampp = entry["methods"]
    assert occlusion["method"] == "occlusion" and occlusion["rows"] == list(range(12))
    assert (
        gradcampp["method"] == "gradcam++"
        and gradcampp["rows"] == []
        and "no gradients" in gradcampp["skipped"]
    )
    monkeypatch.setenv("RUNNER_SALIENCY_METHODS", "gradcam++")
    entry = explained(pool, save_pt2(model, tmp_path / "digits.pt2", (1, 8, 8)), "pt2")
    assert [m["method"] for m in entry["methods"]] == ["gradcam++"] and len(entry["methods"][0]["rows"]) == 12


def test_a_spent_budget_stops_after_the_first_request_of_the_cheapest_method(pool, tmp_path):
    model = DigitsConvNet().eval()
    path = save_pt2(model, tmp_path / "digits.pt2", (1, 8, 8))
    x = digits_images(40)
    arrays = {"index": np.arange(40), "label": np.arange(40) % 10, "pred": np.arange(40) % 10}
    data = type("Data", (), {"parts": {"main": digits_reader(x)}})()
    settings = ServerSettings(sha256=file_sha256(path), fmt="pt2", device="cpu", threads=1)
    with pool.borrow(path, settings) as (server, _):
        entry = saliency_sample.explain_task(server, "digits", data, arrays, evaluation_s=0.0)
    assert entry is not None
    first, *rest = entry["methods"]
    assert first["method"] == "gradcam++" and len(first["rows"]) == saliency_sample.FIRST_CHUNK
    assert all(m["rows"] == [] and "budget" in m["skipped"] for m in rest), rest


def test_a_fixed_batch_export_gets_every_layer_method_for_the_whole_sample(pool, tmp_path):
    """explain_task on a .pt2 exported for batches of exactly 4: every method maps all 12 images
    (requests of at least 4 images, padded by the sandbox), Grad-CAM++ as the unexported model's."""
    model = DigitsConvNet().eval()
    entry = explained(pool, save_pt2_as_exported(model, tmp_path / "fixed.pt2", (4, 1, 8, 8)), "pt2")
    methods = {m["method"]: m for m in entry["methods"]}
    assert list(methods) == ["gradcam++", "normgrad", "smooth-gradcam++"]
    for method in methods.values():
        assert "error" not in method and method["rows"] == list(range(12)), method
    x = torch.from_numpy(digits_images(12))
    targets = (np.arange(12) % 10 * (np.arange(12) % 2)).tolist()
    want = saliency.quantize(saliency.gradcampp(model, x, layer="conv", target=targets).maps).astype(int)
    got = saliency_sample.decode_maps({**methods["gradcam++"], "side": 16}).astype(int)
    assert np.abs(got - want).max() <= 1


def test_library_weights_and_their_pt2_export_give_the_same_maps_at_the_same_layer(pool, tmp_path):
    """A torchvision ResNet-18 as .safetensors (an eager module behind the library's normalizing
    wrapper) and as its .pt2 export behind the researcher's: on CIFAR's 32×32 images its layer4 is
    1×1, so each layer method looks at ``net.layer3`` (2×2; not the last convolution, not one
    cell) in both, and gives the same maps from both."""
    from runner.architectures import check_architecture_hparams

    from .resnet_files import HPARAMS, save_both

    weights, exported = save_both(tmp_path)
    spec = check_architecture_hparams(HPARAMS, "classifier", "safetensors")
    assert spec is not None
    x = np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)
    got: dict[str, dict[str, Any]] = {}
    for path, fmt, architecture in ((weights, "safetensors", spec.to_json()), (exported, "pt2", "")):
        settings = ServerSettings(
            sha256=file_sha256(path), fmt=fmt, device="cpu", threads=1, architecture=architecture
        )
        with pool.borrow(path, settings) as (server, _):
            for name in ("gradcam++", "normgrad", "smooth-gradcam++"):
                request = {"method": name, "targets": [1, 2, 3], "fill": None, "side": 16}
                got.setdefault(name, {})[fmt] = server.saliency(x, request)
    for name, by_format in got.items():
        (eager, eager_told), (graph, graph_told) = by_format["safetensors"], by_format["pt2"]
        assert (eager_told["saliency_layer"], graph_told["saliency_layer"]) == ("net.layer3", "net.layer3"), (
            name
        )
        assert eager.shape == (3, 16, 16) and np.abs(eager.astype(int) - graph.astype(int)).max() <= 2, name
        assert (eager.reshape(3, -1).max(axis=1) >= 250).all(), name  # a map with a peak, not float noise
