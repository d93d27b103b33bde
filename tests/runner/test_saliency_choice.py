"""Which saliency methods a result carries (issue 17 item 5): the operator's list as
RUNNER_SALIENCY_METHODS / --saliency-methods spells it, refused with the known names when it is
wrong, and the plan per format (what runs, in which order, and what is skipped and why)."""

from __future__ import annotations

import pytest

from runner import saliency_methods, saliency_sample
from runner.saliency_maps import METHODS


@pytest.mark.parametrize("text", [None, "", "  ", "auto", " auto "])
def test_auto_is_the_default_and_spelled_several_ways(text):
    assert saliency_methods.parse_methods(text) is None


def test_a_list_keeps_the_operators_order_and_allows_spaces_after_commas():
    assert saliency_methods.parse_methods("normgrad, gradcam++") == ("normgrad", "gradcam++")
    assert saliency_methods.parse_methods("occlusion") == ("occlusion",)


@pytest.mark.parametrize(
    "text, says",
    [
        (",,", "empty item"),
        ("gradcam++,", "empty item"),
        ("GRADCAM++", "did you mean 'gradcam++'"),
        ("occlusion;rm -rf", "unknown saliency method 'occlusion;rm -rf'"),
        ("gradcam++,gradcam++", "twice"),
        ("auto,normgrad", "'auto' cannot be combined"),
        ("grad\x1bcam", "unknown saliency method"),
    ],
)
def test_a_mistaken_list_is_refused_naming_every_known_method(text, says):
    with pytest.raises(ValueError) as refused:
        saliency_methods.parse_methods(text)
    message = str(refused.value)
    assert says in message and all(name in message for name in METHODS), message
    assert "\x1b" not in message  # a control character is shown escaped, never sent to a terminal


def test_auto_gives_every_layer_method_cheapest_first_where_the_format_exposes_layers():
    for fmt in ("pt2", "safetensors"):
        assert saliency_methods.plan(fmt, None) == (["gradcam++", "normgrad", "smooth-gradcam++"], {})
    assert saliency_methods.plan("torchscript", None) == (["smoothgrad"], {})
    assert saliency_methods.plan("onnx", None) == (["occlusion"], {})


def test_a_method_the_format_cannot_run_is_skipped_with_the_reason_not_run():
    run, skipped = saliency_methods.plan("onnx", ("gradcam++", "occlusion", "smoothgrad"))
    assert run == ["occlusion"]
    assert set(skipped) == {"gradcam++", "smoothgrad"} and "no gradients" in skipped["gradcam++"]
    run, skipped = saliency_methods.plan("torchscript", ("normgrad", "smoothgrad", "occlusion"))
    assert run == ["smoothgrad", "occlusion"] and "hook" in skipped["normgrad"]
    assert saliency_methods.plan("pt2", ("smooth-gradcam++", "gradcam")) == (
        ["smooth-gradcam++", "gradcam"],
        {},
    )


def test_a_list_set_in_the_environment_after_start_up_is_recorded_not_raised(monkeypatch):
    """explain_task reads the variable at each job; a bad one (the CLI refuses it at start-up)
    leaves the result whole with the reason and no maps."""
    import numpy as np

    monkeypatch.setenv("RUNNER_SALIENCY_METHODS", "gradcam+++")
    arrays = {
        "index": np.arange(4),
        "label": np.zeros(4, dtype=np.int64),
        "pred": np.zeros(4, dtype=np.int64),
    }
    data = type("Data", (), {"parts": {"main": list(range(4))}})()
    entry = saliency_sample.explain_task(object(), "digits", data, arrays, evaluation_s=1.0)
    assert entry is not None and entry["format"] == 2
    assert "unknown saliency method" in entry["error"] and entry["methods"] == [] and entry["rows"] == []


@pytest.mark.parametrize(
    "command, how", [("work", "env"), ("run", "option"), ("run", "env"), ("work", "option")]
)
def test_runner_work_and_run_refuse_an_unknown_method_at_start_up(command, how, tmp_path):
    """Before any job is claimed or model loaded: exit 2 with the known names, whether the
    operator set the variable or the option."""
    import os
    import subprocess
    import sys

    args = {
        "work": ["--server", "http://127.0.0.1:9", "--token", "t", "--data-root", str(tmp_path)],
        "run": ["--task", "digits", "--artifact", __file__, "--data-root", str(tmp_path)],
    }[command]
    env = {**os.environ, "RUNNER_WORK_DIR": str(tmp_path)}
    env.pop("RUNNER_SALIENCY_METHODS", None)
    if how == "env":
        env["RUNNER_SALIENCY_METHODS"] = "occlusion;rm -rf"
    else:
        args += ["--saliency-methods", "occlusion;rm -rf"]
    done = subprocess.run(
        [sys.executable, "-m", "runner.cli", command, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    said = " ".join(done.stderr.split())
    assert done.returncode == 2, done.stderr
    assert "unknown saliency method" in said and "smooth-gradcam++, normgrad" in said, said
    assert not (tmp_path / "result-digits.json").exists()
