"""What the tracks share (runner/tracks/common.py) and the one stager of the sandbox's input
folder (runner/workdir.stage_input_folder): the builtin-or-model-file decision for a site job and
a local run, and the permissions the sandbox's user reads the staged files through."""
from __future__ import annotations

import json

import numpy as np
import pytest

from runner.spec import BUILTIN_FORMAT, OPTIMIZER_FORMAT, ErrorKind, EvaluationError
from runner.tracks.common import builtin_or_model_file, load_seconds, model_file_format
from runner.workdir import stage_input_folder

BM3D = json.dumps({"builtin_baseline": "bm3d"}).encode()


@pytest.fixture
def builtin_file(tmp_path):
    path = tmp_path / "bm3d.json"
    path.write_bytes(b"  \n" + BM3D)
    return path


@pytest.fixture
def pickle_file(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(b"\x80\x04\x95" + b"\0" * 64)
    return path


def test_a_local_run_calls_a_json_file_a_builtin_baseline_for_a_kind_that_has_them(builtin_file):
    assert builtin_or_model_file(builtin_file, "denoiser") == (BUILTIN_FORMAT, "bm3d")


def test_a_site_job_trusts_the_declared_format_and_checks_the_file_agrees(builtin_file, pickle_file):
    assert builtin_or_model_file(builtin_file, "denoiser", declared=BUILTIN_FORMAT) == (BUILTIN_FORMAT, "bm3d")
    with pytest.raises(EvaluationError) as caught:
        builtin_or_model_file(pickle_file, "denoiser", declared=BUILTIN_FORMAT)
    assert caught.value.kind == ErrorKind.INVALID_ARTIFACT and "must be JSON" in caught.value.message


def test_a_builtin_file_for_a_kind_without_builtins_is_refused_as_a_model_file(builtin_file):
    with pytest.raises(EvaluationError) as caught:
        builtin_or_model_file(builtin_file, "classifier")
    assert caught.value.kind == ErrorKind.INVALID_ARTIFACT


def test_a_pickle_is_refused_with_the_export_advice(pickle_file):
    with pytest.raises(EvaluationError) as caught:
        model_file_format(pickle_file)
    assert caught.value.kind == ErrorKind.INVALID_ARTIFACT
    assert "export" in caught.value.message.lower()


def test_an_optimizer_is_python_source_whatever_its_content(tmp_path):
    path = tmp_path / "opt.py"
    path.write_text("{")
    assert builtin_or_model_file(path, "optimizer") == (OPTIMIZER_FORMAT, None)


def test_a_warm_server_spent_nothing_loading_the_model():
    assert load_seconds({"load_s": 1.23456}, reused=True) == 0.0
    assert load_seconds({"load_s": 1.23456}, reused=False) == 1.2346


def test_the_input_folder_is_readable_by_the_sandbox_and_its_parent_is_not_listable(tmp_path):
    source = tmp_path / "program.py"
    source.write_text("print('hi')")
    images = np.arange(6, dtype=np.uint8)
    folder = stage_input_folder(
        tmp_path,
        {"program.py": source, "task.json": b"{}", "images.npy": lambda p: np.save(p, images)},
    )
    assert folder == tmp_path / "input"
    assert (tmp_path.stat().st_mode & 0o777, folder.stat().st_mode & 0o777) == (0o711, 0o755)
    assert {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()} == {
        "program.py": 0o644, "task.json": 0o644, "images.npy": 0o644}
    assert (folder / "program.py").read_text() == "print('hi')"
    assert np.array_equal(np.load(folder / "images.npy"), images)


def test_staging_twice_into_one_folder_is_refused(tmp_path):
    stage_input_folder(tmp_path, {}, name="io")
    with pytest.raises(FileExistsError):
        stage_input_folder(tmp_path, {}, name="io")
