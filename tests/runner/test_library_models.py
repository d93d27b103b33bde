"""Architecture + weights submissions (issue 19 item 1): a .safetensors state dict and
hyperparameters naming a torchvision or timm architecture, built and loaded by the sandboxed model
server. What a researcher relies on: the same network scores exactly what its .pt2 export scores,
a wrong name, shape or dtype is one line naming it, and hostile files and names are refused before
anything is built or allocated."""
from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from runner import datasets
from runner.architectures import (
    MAX_NUM_CLASSES,
    allowed_architectures,
    check_architecture_hparams,
    read_safetensors_header,
)
from runner.cli import app
from runner.cli.architectures import installed_document
from runner.evaluate import file_sha256, local_job_spec
from runner.sandboxed import model_server
from runner.serve import ServerPool, ServerSettings
from runner.spec import ErrorKind, EvaluationError, SpecError, sniff_model_format
from runner.tracks.common import model_options

from .resnet_files import CIFAR_MEAN, CIFAR_STD, HPARAMS, resnet18, save_both

RUNNER_BIN = Path(sys.executable).parent / "runner"


# --------------------------------------------------------------------------------------------
# The allow-list the site reads.
# --------------------------------------------------------------------------------------------
def test_the_shipped_allow_list_is_what_the_installed_torchvision_and_timm_build():
    shipped = allowed_architectures()
    installed = installed_document()["libraries"]
    for library in ("torchvision", "timm"):
        assert sorted(shipped[library]) == installed[library]["classifiers"], (
            f"runner/data_files/architectures.json is stale for {library}: run `runner architectures`")
    assert {"resnet18", "resnet50", "vit_b_16"} <= shipped["torchvision"]
    assert {"convnext_tiny", "resnet18"} <= shipped["timm"]
    assert "fasterrcnn_resnet50_fpn" not in shipped["torchvision"]  # detection is no classifier


def test_runner_architectures_check_fails_on_a_stale_list_and_rewrites_it(tmp_path):
    stale = tmp_path / "architectures.json"
    stale.write_text('{"libraries": {}}')
    checked = CliRunner().invoke(app, ["architectures", "--out", str(stale), "--check"])
    assert checked.exit_code == 1 and "does not match" in checked.output
    written = CliRunner().invoke(app, ["architectures", "--out", str(stale)])
    assert written.exit_code == 0, written.output
    assert CliRunner().invoke(app, ["architectures", "--out", str(stale), "--check"]).exit_code == 0
    assert "resnet18" in json.loads(stale.read_text())["libraries"]["torchvision"]["classifiers"]


# --------------------------------------------------------------------------------------------
# Hyperparameters: their shape, and hostile names.
# --------------------------------------------------------------------------------------------
def test_good_hyperparameters_give_the_architecture_the_model_server_builds():
    spec = check_architecture_hparams({**HPARAMS, "pretrained": False}, "classifier", "safetensors")
    assert spec is not None and spec.architecture == "torchvision:resnet18" and spec.num_classes == 10
    assert json.loads(spec.to_json()) == {**HPARAMS, "pretrained": False}
    timm_spec = check_architecture_hparams({**HPARAMS, "architecture": "timm:convnext_tiny"}, "classifier",
                                           "safetensors")
    assert timm_spec is not None and timm_spec.library == "timm"
    assert check_architecture_hparams({"precision": "bf16"}, "classifier", "pt2") is None


@pytest.mark.parametrize(("change", "message"), [
    ({"architecture": "torchvision:../../os.system"}, "torchvision has no classifier of that name"),
    ({"architecture": "torchvision:__import__('os').system('id')"}, "torchvision has no classifier"),
    ({"architecture": "timm:resnet18,pretrained_cfg_overlay=dict(file='/etc/passwd')"}, "timm has no classifier"),
    ({"architecture": "timm:resnet18:num_classes=5"}, 'must be "torchvision:<name>" or "timm:<name>"'),
    ({"architecture": "timm:"}, "timm has no classifier"),
    ({"architecture": "timm:resnet18.a1_in1k"}, 'without its pretrained tag, "timm:resnet18"'),
    ({"architecture": "os:system"}, "the library must be torchvision or timm"),
    ({"architecture": ["torchvision", "resnet18"]}, 'must be "torchvision:<name>"'),
    ({"architecture": "torchvision:fasterrcnn_resnet50_fpn"}, "has no classifier"),
    ({"num_classes": 10**9}, f"from 1 to {MAX_NUM_CLASSES:,}"),
    ({"num_classes": 0}, "num_classes must be a whole number"),
    ({"num_classes": True}, "num_classes must be a whole number"),
    ({"num_classes": 10.0}, "num_classes must be a whole number"),
    ({"mean": [0.5, 0.5]}, "mean must be 3 numbers"),
    ({"mean": [0.5, 0.5, float("nan")]}, "mean must be 3 numbers"),
    ({"std": [0.2, 0.0, 0.2]}, "std must be 3 positive numbers"),
    ({"pretrained": "yes"}, "pretrained must be true or false"),
])
def test_a_bad_or_hostile_architecture_is_one_line_that_names_it(change, message):
    with pytest.raises(SpecError, match=None) as refused:
        check_architecture_hparams({**HPARAMS, **change}, "classifier", "safetensors")
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_weights_without_an_architecture_and_an_architecture_beside_an_export_are_refused():
    with pytest.raises(SpecError, match="name their architecture in the hyperparameters"):
        check_architecture_hparams({"num_classes": 10}, "classifier", "safetensors")
    with pytest.raises(SpecError, match="carries its own architecture"):
        check_architecture_hparams(HPARAMS, "classifier", "pt2")


def test_a_denoiser_cannot_be_library_weights_and_is_told_to_export():
    with pytest.raises(SpecError, match="no library the runner ships .* has a denoising architecture"):
        check_architecture_hparams({}, "denoiser", "safetensors")


def test_the_runner_turns_refused_hyperparameters_into_bad_hparams(tmp_path):
    weights, _ = save_both(tmp_path)
    spec = local_job_spec("cifar10", weights, {**HPARAMS, "num_classes": 10**9})
    assert spec.submission.artifact_format == "safetensors"
    with pytest.raises(EvaluationError) as refused:
        model_options(spec, "classifier")
    assert refused.value.kind == ErrorKind.BAD_HPARAMS and "num_classes" in refused.value.message
    good = model_options(local_job_spec("cifar10", weights, HPARAMS), "classifier")
    assert json.loads(good["architecture"])["architecture"] == "torchvision:resnet18"


# --------------------------------------------------------------------------------------------
# The file: sniffed by content, its header checked before anything is read into memory.
# --------------------------------------------------------------------------------------------
def _safetensors(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def test_a_safetensors_file_is_sniffed_even_when_its_length_looks_like_a_pickle(tmp_path):
    weights, _ = save_both(tmp_path)
    assert sniff_model_format(weights.read_bytes()[:4096]) == "safetensors"
    # A header of 128-1535 bytes starts 0x80 0x00..0x05, a pickle's protocol mark; JSON may be
    # padded with spaces to any length.
    raw = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode().ljust(128)
    padded = struct.pack("<Q", len(raw)) + raw + b"\0" * 4
    assert padded[:2] == b"\x80\x00"
    assert read_safetensors_header(io.BytesIO(padded), len(padded)) == {"w": ("F32", [1])}
    assert sniff_model_format(padded) == "safetensors"


def test_the_header_of_a_real_file_gives_every_tensor_dtype_and_shape(tmp_path):
    weights, _ = save_both(tmp_path)
    with open(weights, "rb") as fh:
        tensors = read_safetensors_header(fh, weights.stat().st_size)
    assert tensors["fc.weight"] == ("F32", [10, 512]) and tensors["bn1.num_batches_tracked"] == ("I64", [])
    assert len(tensors) == len(resnet18().state_dict())


@pytest.mark.parametrize(("content", "message"), [
    # A header that claims a 4 TB tensor in a file of a few bytes.
    (_safetensors({"w": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 4 * 10**12]}}, b"\0" * 8),
     "fall outside the file"),
    (_safetensors({"w": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 8]}}, b"\0" * 8),
     "needs 4,000,000,000,000 bytes"),
    (struct.pack("<Q", 2**40) + b"{" + b" " * 100, "the .safetensors header claims"),
    (_safetensors({"w": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}}, b"\0" * 4), "weights must be floating"),
    (_safetensors({"w": {"dtype": "BOOL", "shape": [4], "data_offsets": [0, 4]}}, b"\0" * 4), "is 'BOOL'"),
    (_safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                   "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12), "overlap"),
    (_safetensors({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 40), "cover 4 of"),
    (_safetensors({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4), "is not a list"),
    (struct.pack("<Q", 5) + b"{nope", "is not JSON"),
    (_safetensors([1, 2]), "must be a JSON object"),
])
def test_a_hostile_header_is_refused_before_any_tensor_is_read(content, message):
    with pytest.raises(SpecError) as refused:
        read_safetensors_header(io.BytesIO(content), len(content))
    assert message in str(refused.value) and "\n" not in str(refused.value)


# --------------------------------------------------------------------------------------------
# Building and loading, in the process (the checks) and in the sandbox (the path jobs take).
# --------------------------------------------------------------------------------------------
def _load(path: Path, **change):
    spec = {**HPARAMS, "pretrained": False, **change}
    return model_server.load_model(str(path), "safetensors", "cpu", threads=1, architecture=spec)


def _refusal(path: Path, **change) -> str:
    with pytest.raises(model_server.ChildError) as refused:
        _load(path, **change)
    assert refused.value.kind == "invalid_artifact" and "\n" not in refused.value.message
    return refused.value.message


def test_a_wrong_num_classes_names_the_head_and_both_shapes(tmp_path):
    weights, _ = save_both(tmp_path)
    message = _refusal(weights, num_classes=100)
    assert "fc.bias is [10] in the file, [100] in torchvision:resnet18 (num_classes 100)" in message


def test_missing_and_unexpected_names_are_listed_briefly(tmp_path):
    state = resnet18().state_dict()
    del state["fc.bias"]
    state["head.extra"] = torch.zeros(1)
    save_file(state, tmp_path / "w.safetensors")
    message = _refusal(tmp_path / "w.safetensors")
    assert "1 missing (fc.bias); 1 unexpected (head.extra)" in message
    assert "whose state dict has 122 tensors" in message


def test_a_wrapped_state_dict_is_told_to_drop_the_wrappers_prefix(tmp_path):
    save_file({f"module.{k}": v for k, v in resnet18().state_dict().items()}, tmp_path / "w.safetensors")
    message = _refusal(tmp_path / "w.safetensors")
    assert "every name starts with 'module.'" in message and "and 118 more" in message


def test_hostile_tensor_names_are_shortened_and_made_printable_in_the_error(tmp_path):
    state = resnet18().state_dict()
    state["\x1b[31m" + "x" * 100_000] = torch.zeros(1)
    save_file(state, tmp_path / "w.safetensors")
    message = _refusal(tmp_path / "w.safetensors")
    assert len(message) < 600 and "\x1b" not in message and "1 unexpected (?[31mxxx" in message


def test_a_few_bytes_naming_a_billion_parameter_model_are_refused_before_it_is_built(tmp_path, monkeypatch):
    """The names and shapes are checked on the architecture built on the meta device: a small file
    naming timm's 1.8-billion-parameter ViT-g never makes the sandbox allocate and initialise it."""
    from runner.sandboxed import library_models

    built_for_real = []
    construct = library_models.construct

    def watching(library: str, name: str, num_classes: int):
        if torch.get_default_device().type != "meta":
            built_for_real.append(name)
        return construct(library, name, num_classes)

    monkeypatch.setattr(library_models, "construct", watching)
    save_file({"head.weight": torch.zeros(10, 1408), "head.bias": torch.zeros(10)}, tmp_path / "w.safetensors")
    message = _refusal(tmp_path / "w.safetensors", architecture="timm:vit_giant_patch14_224")
    assert "timm:vit_giant_patch14_224 (num_classes 10), whose state dict has 488 tensors: 486 missing" in message
    assert built_for_real == []
    _load(save_both(tmp_path)[0])  # a file that fits is built for real, once
    assert built_for_real == ["resnet18"]


def test_the_wrong_architecture_for_the_weights_is_refused(tmp_path):
    weights, _ = save_both(tmp_path)
    message = _refusal(weights, architecture="torchvision:resnet34")
    assert "missing" in message and "layer1.2" in message


def test_float16_weights_are_cast_to_float32_and_a_float_counter_is_refused(tmp_path):
    net = resnet18()
    state = net.state_dict()
    save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, tmp_path / "half.safetensors")
    model = _load(tmp_path / "half.safetensors")
    assert model.info()["input_dtypes"] == ["float32"]
    assert all(p.dtype == torch.float32 for p in model.module.parameters())
    x = np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32)
    halved = {k: v.half().float() if v.is_floating_point() else v for k, v in state.items()}
    net.load_state_dict(halved)
    with torch.no_grad():
        expected = net((torch.from_numpy(x) - torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1))
                       / torch.tensor(CIFAR_STD).view(1, 3, 1, 1)).numpy()
    assert np.array_equal(model.predict([x], [None]), expected)  # the cast is exact: the same network
    save_file({k: v.float() for k, v in state.items()}, tmp_path / "floatcount.safetensors")
    assert "bn1.num_batches_tracked is float32" in _refusal(tmp_path / "floatcount.safetensors")


def test_a_timm_architecture_is_built_by_timm(tmp_path):
    import timm

    torch.manual_seed(1)
    net = timm.create_model("resnet10t", num_classes=10).eval()
    save_file(net.state_dict(), tmp_path / "t.safetensors")
    model = _load(tmp_path / "t.safetensors", architecture="timm:resnet10t", mean=[0.0] * 3, std=[1.0] * 3)
    x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    with torch.no_grad():
        assert np.array_equal(model.predict([x], [None]), net(torch.from_numpy(x)).numpy())


POOL_IDLE_S = 0  # the `pool` fixture's (tests/runner/conftest.py): servers close at once


def _settings(path: Path, fmt: str, hparams: dict | None = None) -> ServerSettings:
    architecture = ""
    if hparams is not None:
        spec = check_architecture_hparams(hparams, "classifier", fmt)
        architecture = spec.to_json() if spec else ""
    return ServerSettings(sha256=file_sha256(path), fmt=fmt, device="cpu", threads=1, architecture=architecture)


def _logits(pool: ServerPool, path: Path, settings: ServerSettings, x: np.ndarray) -> np.ndarray:
    got: dict = {}
    with pool.borrow(path, settings) as (server, _):
        assert server.info["sandbox"].startswith("bwrap")
        server.stream(iter([(x, "x")]), lambda tag, lo, hi, out: got.__setitem__(lo, out.copy()), max_items=64)
    return np.concatenate([got[k] for k in sorted(got)])


def test_in_the_sandbox_the_weights_give_the_logits_of_their_pt2_export_bit_for_bit(pool, tmp_path):
    weights, exported = save_both(tmp_path)
    x = np.random.default_rng(0).random((20, 3, 32, 32), dtype=np.float32)
    from_weights = _logits(pool, weights, _settings(weights, "safetensors", HPARAMS), x)
    from_export = _logits(pool, exported, _settings(exported, "pt2"), x)
    assert from_weights.shape == (20, 10) and np.array_equal(from_weights, from_export)


def test_in_the_sandbox_a_wrong_shape_is_one_line_at_the_first_load(pool, tmp_path):
    weights, _ = save_both(tmp_path)
    settings = _settings(weights, "safetensors", {**HPARAMS, "num_classes": 100})
    with pytest.raises(EvaluationError) as refused, pool.borrow(weights, settings):
        pass
    assert refused.value.kind == ErrorKind.INVALID_ARTIFACT
    assert "wrong shape: fc.bias is [10] in the file, [100]" in refused.value.message
    assert "\n" not in refused.value.message


def test_pretrained_starts_from_the_published_weights_in_the_torch_hub_cache(pool, tmp_path, monkeypatch):
    """A node with a network fetches torchvision's published weights into $TORCH_HOME/hub; here that
    cache is filled beforehand with a file of our own, so nothing is downloaded. The submission
    holds only the new 10-class head: the rest comes from the published weights."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    published = resnet18(seed=7, num_classes=1000)
    checkpoints = tmp_path / "torch-home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(published.state_dict(), checkpoints / "resnet18-f37072fd.pth")
    head = resnet18(seed=8).fc
    save_file({"fc.weight": head.weight.detach().clone(), "fc.bias": head.bias.detach().clone()},
              tmp_path / "head.safetensors")
    hparams = {**HPARAMS, "pretrained": True}
    x = np.random.default_rng(0).random((6, 3, 32, 32), dtype=np.float32)
    got = _logits(pool, tmp_path / "head.safetensors", _settings(tmp_path / "head.safetensors", "safetensors",
                                                                  hparams), x)
    expected_net = resnet18(seed=7, num_classes=1000)
    expected_net.fc = head
    with torch.no_grad():
        expected = expected_net((torch.from_numpy(x) - torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1))
                                / torch.tensor(CIFAR_STD).view(1, 3, 1, 1)).numpy()
    assert np.allclose(got, expected, rtol=1e-5, atol=1e-5)
    # Without the head, the 1,000-class published head cannot serve 10 classes: one line says so.
    save_file({}, tmp_path / "empty.safetensors")
    with pytest.raises(EvaluationError) as refused, pool.borrow(
            tmp_path / "empty.safetensors", _settings(tmp_path / "empty.safetensors", "safetensors", hparams)):
        pass
    assert "the published weights lack fc.bias, fc.weight" in refused.value.message


def _fill_hub_cache(home: Path, repo: str, state: dict) -> None:
    """What ``hf_hub_download`` leaves in ``$HF_HOME/hub`` for ``repo``'s model.safetensors."""
    folder = home / "hub" / ("models--" + repo.replace("/", "--"))
    revision = "0" * 40
    (folder / "snapshots" / revision).mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(revision)
    save_file(state, folder / "snapshots" / revision / "model.safetensors")


def test_pretrained_timm_weights_come_from_the_hugging_face_hub_cache(pool, tmp_path, monkeypatch):
    """timm's published weights are the default tag's model.safetensors on the hub; offline, the
    runner reads them from the hub's cache (filled here beforehand), and a node that has neither
    the file nor a network fails the job as the platform's (download_failed), not the submitter's."""
    import timm

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(3)
    published = timm.create_model("resnet10t").eval()
    repo = timm.models.get_pretrained_cfg("resnet10t").hf_hub_id
    _fill_hub_cache(tmp_path / "hf", repo, published.state_dict())
    torch.manual_seed(4)
    head = torch.nn.Linear(published.num_features, 10)
    save_file({"fc.weight": head.weight.detach().clone(), "fc.bias": head.bias.detach().clone()},
              tmp_path / "head.safetensors")
    hparams = {**HPARAMS, "architecture": "timm:resnet10t", "pretrained": True, "mean": [0.0] * 3, "std": [1.0] * 3}
    x = np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32)
    got = _logits(pool, tmp_path / "head.safetensors",
                  _settings(tmp_path / "head.safetensors", "safetensors", hparams), x)
    published.reset_classifier(10)
    published.fc = head
    with torch.no_grad():
        assert np.allclose(got, published(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-5)
    other = {**hparams, "architecture": "timm:resnet14t"}  # nothing of it in the cache, no network
    with pytest.raises(EvaluationError) as refused, pool.borrow(
            tmp_path / "head.safetensors", _settings(tmp_path / "head.safetensors", "safetensors", other)):
        pass
    assert refused.value.kind == ErrorKind.DOWNLOAD_FAILED and "could not fetch timm's resnet14t" in refused.value.message


# --------------------------------------------------------------------------------------------
# `runner run`: the "done when", on fake CIFAR-10.
# --------------------------------------------------------------------------------------------
def test_runner_run_scores_the_weights_exactly_as_their_pt2_export_on_fake_cifar10(bwrap, tmp_path):
    weights, exported = save_both(tmp_path)
    root = tmp_path / "data"
    datasets.get("cifar-10-batches-py").fake(root, n_per_class=5)
    results = {}
    for path, hparams in ((weights, HPARAMS), (exported, {})):
        out = tmp_path / f"{path.suffix[1:]}.json"
        done = subprocess.run(
            [str(RUNNER_BIN), "run", "--artifact", str(path), "--task", "cifar10", "--data-root", str(root),
             "--out", str(out), "--hparams", json.dumps(hparams)],
            capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**__import__("os").environ,
                                                                           "RUNNER_WORK_DIR": str(tmp_path)})
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        results[path.suffix] = json.loads(out.read_text())
    safetensors, pt2 = results[".safetensors"], results[".pt2"]
    assert safetensors["env"]["format"] == "safetensors" and pt2["env"]["format"] == "pt2"
    assert safetensors["metrics"] == pt2["metrics"] and safetensors["ci95"] == pt2["ci95"]
    assert safetensors["breakdown"] == pt2["breakdown"]
