"""The export lines the README, docs/submissions.md and the submit page show (issue 19 item 2) are
one text, torch.export and ONNX come before TorchScript everywhere, and the lines work: run as
written on a small classifier they give a file of any batch size that the runner's own loader
accepts and that computes what the model computes."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
PLACES = {"README.md": ROOT / "README.md", "docs/submissions.md": ROOT / "docs" / "submissions.md",
          "submit page": ROOT / "templates" / "submissions" / "submit.html"}


def snippet(kind: str) -> str:
    """The README's export lines of ``kind`` ("pt2" or "onnx"): its python block that saves one."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return next(b for b in blocks if f'"model.{kind}"' in b)


@pytest.mark.parametrize("kind", ["pt2", "onnx"])
def test_every_place_shows_the_same_export_lines(kind):
    lines = [line.split("  #")[0].strip() for line in snippet(kind).strip().splitlines()]
    for name, path in PLACES.items():
        text = path.read_text().replace("&quot;", '"')
        for line in lines:
            assert line in text, f"{name} lacks the {kind} export line {line!r}"


@pytest.mark.parametrize("name", PLACES)
def test_export_and_onnx_come_before_torchscript(name):
    text = PLACES[name].read_text()
    assert text.index("torch.export.save(ep") < text.index("torch.onnx.export(model.eval()") < text.index(
        "torch.jit.save(torch.jit.script(model)")


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.head = torch.nn.Linear(4, 10)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def run_snippet(kind: str, folder: Path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = Tiny()
    scope = {"torch": torch, "model": model, "x": torch.rand(2, 1, 8, 8)}
    code = snippet(kind).replace(f'"model.{kind}"', repr(str(folder / f"model.{kind}")))
    exec(compile(code, f"README {kind} snippet", "exec"), scope)
    return model, folder / f"model.{kind}"


def runner_sees(path: Path, fmt: str, batch: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """What the runner's model server reads of the file (its info) and its logits for ``batch``."""
    from runner.sandboxed import model_server

    loaded = model_server.load_model(str(path), fmt, "cpu", threads=1)
    loaded.configure()
    return loaded.info(), torch.from_numpy(loaded.predict([batch.numpy()], [None]))


def test_the_pt2_lines_give_a_file_of_any_batch_size_that_computes_the_model(tmp_path):
    model, path = run_snippet("pt2", tmp_path)
    batch = torch.rand(5, 1, 8, 8)
    info, logits = runner_sees(path, "pt2", batch)
    assert (info["batch_min"], info["batch_max"]) == (1, None)  # the runner may send any batch
    torch.testing.assert_close(logits, model(batch).detach())


def test_the_onnx_lines_give_one_file_of_any_batch_size_that_computes_the_model(tmp_path):
    import onnxscript  # noqa: F401  torch's ONNX exporter needs it (the README says so; the dev extra installs it)
    model, path = run_snippet("onnx", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # external_data=False: no model.onnx.data
    batch = torch.rand(5, 1, 8, 8)
    info, logits = runner_sees(path, "onnx", batch)
    assert (info["batch_min"], info["batch_max"]) == (1, None)
    torch.testing.assert_close(logits, model(batch).detach(), rtol=1e-4, atol=1e-5)
