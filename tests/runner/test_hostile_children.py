"""Submissions that attack the trusted runner through what their sandboxed child leaves behind or
writes: each runs through the real sandbox on the optimizer track, as a site job would, and must
end as the submission's own error (or its result), never as the runner's failure, with nothing
left on the runner's disk."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runner.evaluate import evaluate, local_job_spec
from runner.spec import ErrorKind, EvaluationError, is_user_error

from .hostile import source

pytestmark = pytest.mark.usefixtures("bwrap")


@pytest.fixture
def work_dir(tmp_path, monkeypatch):
    """The runner's work folder (RUNNER_WORK_DIR), empty before each job."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.setenv("RUNNER_WORK_DIR", str(folder))
    return folder


def run_hostile(name: str, write_submission, hparams: dict | None = None) -> dict:
    path = write_submission(source(name), name=f"{name}.py")
    return evaluate(local_job_spec("opt-f1", path, hparams or {"lr": 0.1}), path, data_root="/nonexistent")


def failure(name: str, write_submission) -> EvaluationError:
    with pytest.raises(EvaluationError) as caught:
        run_hostile(name, write_submission)
    return caught.value


def test_a_scratch_folder_3000_levels_deep_with_sockets_fifos_links_and_locked_folders_is_removed_and_the_result_kept(
        work_dir, write_submission):
    result = run_hostile("deep_scratch", write_submission)
    assert result["metrics"]["final_x"] == pytest.approx(-0.3, abs=1e-5)
    assert list(work_dir.iterdir()) == []


def test_a_socket_where_the_result_document_was_changes_nothing_the_runner_reads(work_dir, write_submission):
    result = run_hostile("socket_output", write_submission)
    assert result["metrics"]["final_x"] == pytest.approx(-0.3, abs=1e-5)
    assert list(work_dir.iterdir()) == []


def test_a_failure_frame_whose_kind_is_not_a_string_is_wrong_output_naming_the_field(work_dir, write_submission):
    error = failure("unhashable_kind", write_submission)
    assert error.kind == ErrorKind.WRONG_OUTPUT
    assert "the error in the optimizer's answer" in error.message and "kind: Input should be a valid string" in error.message


def test_a_frame_nested_30000_deep_is_wrong_output_not_a_recursion_error(work_dir, write_submission):
    error = failure("deep_json", write_submission)
    assert error.kind == ErrorKind.WRONG_OUTPUT and "not valid JSON" in error.message


def test_a_submission_that_kills_itself_is_said_to_be_killed_by_sigkill_not_out_of_memory(work_dir, write_submission):
    error = failure("kills_itself", write_submission)
    assert error.kind == ErrorKind.RUNTIME_ERROR
    assert "killed by signal 9 (SIGKILL)" in error.message and "memory" not in error.message


def test_a_thread_bomb_is_told_it_hit_the_process_limit(work_dir, write_submission):
    error = failure("thread_bomb", write_submission)
    assert error.kind == ErrorKind.SANDBOX_VIOLATION
    assert "can't start new thread" in error.message and "too many processes or threads" in error.message
    assert "limit of 128" in error.message


@pytest.mark.parametrize("name, says", [("torch_allocation", "DefaultCPUAllocator: can't allocate memory"),
                                        ("numpy_allocation", "Unable to allocate 64.0 GiB")])
def test_an_allocation_past_the_memory_limit_is_out_of_memory_whichever_library_asked(name, says, work_dir,
                                                                                       write_submission):
    error = failure(name, write_submission)
    assert error.kind == ErrorKind.OUT_OF_MEMORY and says in error.message


def test_every_hostile_submission_is_blamed_on_the_submission(work_dir, write_submission):
    for name in ("unhashable_kind", "deep_json", "kills_itself"):
        assert is_user_error(failure(name, write_submission).kind)


# --------------------------------------------------------------------------------------------
# The operator's terminal.
# --------------------------------------------------------------------------------------------
RUNNER = str(Path(sys.executable).parent / "runner")


def test_runner_run_prints_markup_and_terminal_escapes_from_a_submission_literally(tmp_path, write_submission):
    path = write_submission(source("terminal_escapes"), name="terminal_escapes.py")
    # A terminal as rich sees it (FORCE_COLOR), so the progress bar is drawn with the message.
    done = subprocess.run([RUNNER, "run", "--task", "opt-f1", "--artifact", str(path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=180,
                          env={**os.environ, "COLUMNS": "250", "FORCE_COLOR": "1"})
    assert done.returncode == 1, done.stderr
    assert "MarkupError" not in done.stderr and "Traceback" not in done.stderr
    assert "runtime_error" in done.stderr and "[/red] [bold]x[/bold]" in done.stderr
    assert "\\x1b]52;c;" in done.stderr and "\\x07" in done.stderr and "\\x9b31m" in done.stderr
    for raw in ("\x1b]52", "\x1b]0;", "\x07", "\x1b[2J", "\x9b"):
        assert raw not in done.stderr and raw not in done.stdout
