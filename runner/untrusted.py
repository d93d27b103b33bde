"""What a sandboxed program hands back, read as hostile input: the submission shares the process
that writes every document and frame, so it can replace any of them with anything.

- Documents and frames are parsed by pydantic's JSON parser (nesting capped at 200 levels, size
  capped by the caller) into typed schemas (:class:`ChildReport` and the tracks' own models).
  Anything that does not fit is WRONG_OUTPUT, the submission's fault, never a runner crash.
- An error a child reports keeps its kind only when it is a user error kind: a submission can
  never report the platform's failure about itself.
- Text from inside (messages, progress, log tails) goes through :func:`printable` before it
  reaches a terminal or a log: control characters become visible escapes.

Files the sandbox wrote are read by runner/sandbox.py's ``read_scratch_file`` (no links, regular
files only, size-capped) and removed by runner/workdir.py.
"""
from __future__ import annotations

import re
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr, ValidationError

from runner.spec import USER_ERROR_KINDS, ErrorKind, EvaluationError

MAX_MESSAGE_CHARS = 2000
MAX_DOC_BYTES = 16 << 20

# C0 controls but newline and tab, DEL, C1 controls (a terminal honours 0x9b as CSI), and the
# Unicode line/paragraph separators and bidirectional overrides that reorder what a reader sees.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: Any, *, keep_newlines: bool = True) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``, ``\\u202e``), so that
    printing it can neither move the cursor, recolour, retitle or clear a terminal nor set its
    clipboard; newlines and tabs stay unless ``keep_newlines`` is false."""
    text = str(text)

    def escape(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    text = _CONTROL.sub(escape, text)
    return text if keep_newlines else text.replace("\n", "\\n").replace("\t", "\\t")


class Schema(BaseModel):
    """A document from inside the sandbox: types checked strictly, unknown keys ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class ReportedError(Schema):
    """``{"kind", "message", "retry", "repeats"}``: a failure as a child reports it. ``repeats``
    (it would recur on every task of the submission) is taken at its word: a submission that
    claims it only ends its own other tasks, and only for kinds that can repeat."""

    kind: StrictStr
    message: StrictStr = ""
    retry: StrictBool = False
    repeats: StrictBool = False


M = TypeVar("M", bound=BaseModel)


def _first_problem(exc: ValidationError) -> str:
    problem = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in problem.get("loc", ())) or "the document"
    return printable(f"{where}: {problem.get('msg')}", keep_newlines=False)[:300]


def tampered(what: str, problem: str, log_tail: str = "") -> EvaluationError:
    return EvaluationError(ErrorKind.WRONG_OUTPUT, f"{what} does not follow the harness's format ({problem}); did "
                           "the submission overwrite or tamper with it?", log_tail)


def parse(schema: type[M], data: Any, *, what: str, log_tail: str = "") -> M:
    """``data`` (already-parsed JSON: dicts, lists, strings, numbers) checked against ``schema``;
    raises EvaluationError(WRONG_OUTPUT) naming the first thing that does not fit."""
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise tampered(what, _first_problem(exc), log_tail) from exc


def load_json(raw: bytes, *, what: str, max_bytes: int = MAX_DOC_BYTES, log_tail: str = "") -> Any:
    """``raw`` parsed as JSON with nesting capped (no recursion error, whatever the depth), strict
    (no NaN or Infinity literals); raises EvaluationError(WRONG_OUTPUT)."""
    import pydantic_core

    if len(raw) > max_bytes:
        raise EvaluationError(ErrorKind.WRONG_OUTPUT, f"{what} is {len(raw)} bytes, over the limit of {max_bytes}",
                              log_tail)
    try:
        return pydantic_core.from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        problem = printable(str(exc), keep_newlines=False)[:200]
        raise EvaluationError(ErrorKind.WRONG_OUTPUT, f"{what} is not valid JSON ({problem}); did the submission "
                              "overwrite it?", log_tail) from exc


def reported_error(data: Any, *, what: str, log_tail: str = "") -> EvaluationError:
    """The EvaluationError a child's ``{"kind", "message"}`` amounts to. A kind outside the user
    error kinds (the platform's own, or one that does not exist) becomes RUNTIME_ERROR and the
    message says so; a malformed report is WRONG_OUTPUT."""
    try:
        error = parse(ReportedError, data, what=f"the error in {what}", log_tail=log_tail)
    except EvaluationError as malformed:
        return malformed
    message = printable(error.message.strip() or "the evaluation failed")[:MAX_MESSAGE_CHARS]
    if error.kind in USER_ERROR_KINDS:
        return EvaluationError(error.kind, message, log_tail, repeats=error.repeats)
    shown = printable(error.kind, keep_newlines=False)[:60]
    return EvaluationError(ErrorKind.RUNTIME_ERROR, f"the submission reported its failure as {shown!r}, a kind "
                           f"only the platform may report: {message}", log_tail)


def read_report(raw: bytes, schema: type[M], *, what: str, max_bytes: int = MAX_DOC_BYTES,
                log_tail: str = "") -> M:
    """A child's result document: ``{"ok": true, ...}`` checked against ``schema``, or
    ``{"ok": false, "error": {...}}`` raised as the EvaluationError it reports
    (:func:`reported_error`). Anything else is WRONG_OUTPUT."""
    data = load_json(raw, what=what, max_bytes=max_bytes, log_tail=log_tail)
    ok = data.get("ok") if isinstance(data, dict) else None
    if not isinstance(ok, bool):
        raise tampered(what, "no \"ok\": true or false at its top", log_tail)
    if not ok:
        raise reported_error(data.get("error"), what=what, log_tail=log_tail)
    return parse(schema, data, what=what, log_tail=log_tail)
