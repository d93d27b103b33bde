"""What a sandboxed child writes, parsed as hostile input by the one parser every track uses:
documents (optimizer and training tracks) and the model server's frames (classifier and
denoising tracks)."""
from __future__ import annotations

import pytest

from runner.sandboxed import rules
from runner.serve import ModelServer, ServerSettings
from runner.spec import ERROR_KINDS, USER_ERROR_KINDS, ErrorKind, EvaluationError
from runner.tracks.training.launch import BenchReport, TrainingReport
from runner.untrusted import Schema, printable, read_report


class SyntheticReport(Schema):
    """A small document schema (what the synthetic functions' child wrote before the runner took
    over their loop): a list of floats and one float."""

    x: list[float]
    optimize_s: float = 0.0


def error_of(raw: bytes, schema=SyntheticReport) -> EvaluationError:
    with pytest.raises(EvaluationError) as caught:
        read_report(raw, schema, what="the evaluation's output")
    return caught.value


@pytest.mark.parametrize("raw, says", [
    (b'{"ok": false, "error": {"kind": ["x"]}}', "kind: Input should be a valid string"),
    (b'{"ok": false, "error": {"kind": {"a": 1}, "message": "m"}}', "kind: Input should be a valid string"),
    (b'{"ok": false, "error": {"kind": "runtime_error", "message": ["m"]}}', "message: Input should be"),
    (b'{"ok": false, "error": "boom"}', "should be a valid dictionary"),
    (b'{"ok": "yes"}', 'no "ok": true or false'),
    (b'[1, 2]', 'no "ok": true or false'),
    (b'{"ok": true, "x": "1.0"}', "x: Input should be a valid list"),
    (b'{"ok": true, "x": [true]}', "x.0: Input should be a valid number"),
    (b'{"ok": true, "x": [NaN]}', "not valid JSON"),
    (b'{"ok": true, "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", "recursion limit"),
    (b"\xff\xfe", "not valid JSON"),
])
def test_a_document_that_does_not_fit_its_schema_is_the_submissions_wrong_output(raw, says):
    error = error_of(raw)
    assert error.kind == ErrorKind.WRONG_OUTPUT and says in error.message


def test_a_document_over_its_size_cap_is_refused_before_parsing():
    with pytest.raises(EvaluationError) as caught:
        read_report(b'{"ok": true, "x": []}' + b" " * 100, SyntheticReport, what="out.json", max_bytes=64)
    assert caught.value.kind == ErrorKind.WRONG_OUTPUT and "over the limit of 64" in caught.value.message


@pytest.mark.parametrize("kind", sorted(ERROR_KINDS - USER_ERROR_KINDS) + ["made_up"])
def test_a_child_cannot_report_an_infrastructure_kind_about_itself(kind):
    raw = b'{"ok": false, "error": {"kind": "%s", "message": "retry me for free"}}' % kind.encode()
    error = error_of(raw)
    assert error.kind == ErrorKind.RUNTIME_ERROR
    assert f"reported its failure as '{kind}', a kind only the platform may report" in error.message
    assert "retry me for free" in error.message


def test_a_user_kind_a_child_reports_is_kept_with_its_message_made_printable():
    error = error_of(b'{"ok": false, "error": {"kind": "not_finite", "message": "x is nan \\u001b[2J"}}')
    assert error.kind == ErrorKind.NOT_FINITE and error.message == "x is nan \\x1b[2J"


def test_a_number_too_big_for_a_float_in_a_training_report_is_wrong_output_not_an_overflow():
    raw = b'{"ok": true, "runs": [{"seed": 0, "train_loss": [' + b"9" * 400 + b'], "seconds": [1.0]}]}'
    error = error_of(raw, TrainingReport)
    assert error.kind == ErrorKind.WRONG_OUTPUT and "runs.0.train_loss.0" in error.message
    assert error_of(b'{"ok": true, "train_items_per_s": "fast"}', BenchReport).kind == ErrorKind.WRONG_OUTPUT


def model_server() -> ModelServer:
    return ModelServer("/nonexistent", ServerSettings(sha256="0" * 64, fmt="onnx"))


@pytest.mark.parametrize("frame", [
    {"op": "error", "id": None, "kind": ["x"], "message": "m", "retry": False},
    {"op": "error", "id": None, "kind": "out_of_memory", "message": "m", "retry": "yes"},
])
def test_a_malformed_error_frame_from_the_model_server_is_wrong_output(frame):
    assert model_server()._child_error(frame, "loading the model").kind == ErrorKind.WRONG_OUTPUT


def test_the_model_server_cannot_report_an_infrastructure_kind():
    frame = {"op": "error", "id": 1, "kind": "sandbox_unavailable", "message": "m", "retry": False}
    assert model_server()._child_error(frame, "running the model").kind == ErrorKind.RUNTIME_ERROR


def test_the_model_servers_frames_are_typed_before_any_track_reads_them():
    from runner.serve.answers import OutFrame, ReadyFrame
    from runner.untrusted import parse

    ready = parse(ReadyFrame, {"op": "ready", "inputs": 2, "load_s": 0.5, "device": "cpu", "nested": {"a": [1]},
                               "attributes": {"wants_noise_level": True}}, what="ready")
    assert ready.info()["inputs"] == 2 and "nested" not in ready.info() and ready.info()["device"] == "cpu"
    for bad in ({"op": "ready", "inputs": [1]}, {"op": "ready", "load_s": "slow"},
                {"op": "ready", "attributes": ["wants_noise_level"]}):
        with pytest.raises(EvaluationError) as caught:
            parse(ReadyFrame, bad, what="ready")
        assert caught.value.kind == ErrorKind.WRONG_OUTPUT
    with pytest.raises(EvaluationError):
        parse(OutFrame, {"op": "out", "id": 1, "shape": [2, -1], "dtype": "float32", "where": "shm", "nbytes": 8},
              what="out")


def test_printable_escapes_terminal_controls_and_keeps_text():
    assert printable("ok [/red] été\n\tdone") == "ok [/red] été\n\tdone"
    assert printable("\x1b]52;c;eA==\x07 \x9b2J \u202eevil") == "\\x1b]52;c;eA==\\x07 \\x9b2J \\u202eevil"
    assert printable("a\nb", keep_newlines=False) == "a\\nb"


@pytest.mark.parametrize("message", [
    "Unable to allocate 64.0 GiB for an array with shape (8589934592,) and data type float64",
    "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate 1",
    "CUDA out of memory. Tried to allocate 20.00 GiB",
    "std::bad_alloc",
])
def test_each_out_of_memory_message_is_recognised_raised_in_a_program_and_read_on_its_stderr(message):
    assert rules.is_out_of_memory(RuntimeError(message))  # what every sandboxed program asks
    assert rules.says_out_of_memory(message)  # what runner/sandbox.py asks of a program's stderr


def test_a_memory_error_is_out_of_memory_whatever_its_message():
    assert rules.kind_of_exception(MemoryError()) == ErrorKind.OUT_OF_MEMORY
    assert rules.is_out_of_memory(MemoryError())


def test_a_thread_or_process_limit_is_named_and_is_not_out_of_memory():
    for exc in (RuntimeError("can't start new thread"), BlockingIOError(11, "Resource temporarily unavailable")):
        assert rules.kind_of_exception(exc) == ErrorKind.SANDBOX_VIOLATION
        assert "too many processes or threads" in rules.limit_note(exc)
