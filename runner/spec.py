"""The contract between the site and the runner: job specs, result documents, error kinds and
artifact formats, node reports and broker settings. Pure Python (no torch, no Django); both sides
import this module and validate everything that crosses the wire against it. What each task is
(its track, dataset, time limit, required metrics) is data in runner/catalogue.py, which
:func:`validate_result` reads. It is one piece (about 480 lines) because it is one contract
under one SCHEMA_VERSION: a runner and a site agree on all of it or on none, and reading it in
one place is how a change to either side is checked against the other.

Runner HTTP API (all under ``/api/runner/v1/``, ``Authorization: Bearer <runner token>``):

- ``POST jobs/<id>/claim/``      body ``{"version", "pools", "datasets"}`` → 200 ``{"spec": JobSpec}``;
  409 when a live attempt exists or the job has ended, and 409 ``{"detail", "reason":
  "dataset_missing"}`` when ``datasets`` (the names this runner holds) lacks the task's dataset:
  the job goes back to its queue for a runner that holds it, no attempt used.
- ``POST jobs/<id>/heartbeat/``  body ``{"attempt", "progress" (0–1), "message"}`` → 200
  ``{"lease_expires_at"}``; 409 when the attempt is no longer the live one (stop working).
- ``GET  jobs/<id>/artifact/?attempt=N`` → the artifact, streamed; header ``X-Artifact-SHA256``.
- ``POST jobs/<id>/result/``     body ``{"attempt", "result": ResultDocument, "log_tail"}`` → 200
  ``{"state", "duplicate"}`` (idempotent per attempt); 400 when the document breaks this spec.
- ``POST jobs/<id>/per-image/?attempt=N``  body the raw ``.npz`` of per-image outcomes
  (runner/metrics/per_image.py) that the attempt's recorded result names under
  ``files.per_image`` (sha256, n), sent after that result → 200 ``{"stored", "duplicate"}``; 409
  when this runner recorded no result for the attempt; 413 over the size cap; 400 when the sha256
  differs or the file is not a well-formed per-image file of the task (never unpickled).
- ``POST jobs/<id>/per-image/?attempt=N``  body the raw ``.npz`` of per-image outcomes
  (runner/metrics/per_image.py) that the attempt's recorded result names under
  ``files.per_image`` (sha256, n), sent after that result → 200 ``{"stored", "duplicate"}``; 409
  when this runner recorded no result for the attempt; 413 over the size cap; 400 when the sha256
  differs or the file is not a well-formed per-image file of the task (never unpickled).
- ``POST jobs/<id>/fail/``       body ``{"attempt", "kind", "message", "log_tail", "repeats"}`` → 200
  ``{"state"}``; 400 for an unknown kind or a ``repeats`` the kind cannot carry. ``repeats``
  (optional, a boolean, default false): the failure depends only on the artifact and its
  hyperparameters, not on the task's data, so it would recur on every other task of the
  submission (:func:`failure_repeats`); the site then cancels those, "skipped: same failure as
  <task>".
- ``POST nodes/heartbeat/``      body ``{"version", "pools", "device", "datasets"}`` → 200; 400 when
  the body breaks :func:`validate_node_report`. ``device`` says what evaluates (``"cpu"``,
  ``"cuda:0 NVIDIA H200"``); ``datasets`` lists what the node holds, each
  ``{"name": catalogue dataset id, "synthetic": bool (a `runner data fake` copy), "checksum":
  str or null (null: not known yet)}``. The site stores the last report and tells users from it
  why a job waits.
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import zipfile
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO

from runner.catalogue import required_curves, required_metrics

SCHEMA_VERSION = 1
API_PREFIX = "/api/runner/v1/"
EVALUATE_TASK_NAME = "runner.evaluate"


class SpecError(ValueError):
    """A document that does not follow this contract."""


# --------------------------------------------------------------------------------------------
# Error kinds. A user error is the submission's fault and counts against the user's quota; an
# infrastructure error is the platform's (retried, never counted). docs/errors.md holds the one
# table of every kind (whose fault, retried, counted, what the user sees); a test keeps it in step.
# --------------------------------------------------------------------------------------------
class ErrorKind:
    INVALID_ARTIFACT = "invalid_artifact"  # cannot be loaded, wrong format, pickle, no entry point
    BAD_HPARAMS = "bad_hparams"  # hyperparameters that do not fit the submission
    RUNTIME_ERROR = "runtime_error"  # the submitted code raised
    WRONG_OUTPUT = "wrong_output"  # shape or dtype other than the contract's
    NOT_FINITE = "not_finite"  # NaN or inf in outputs or the loss
    TIMEOUT = "timeout"  # ran past the task's time limit
    # The submission needed more memory than it had, on a device the runner found healthy and
    # mostly free once the submission had ended (otherwise: DEVICE_ERROR).
    OUT_OF_MEMORY = "out_of_memory"
    SANDBOX_VIOLATION = "sandbox_violation"  # network, files outside the binds, fork bombs
    DATASET_MISSING = "dataset_missing"
    DOWNLOAD_FAILED = "download_failed"
    SANDBOX_UNAVAILABLE = "sandbox_unavailable"
    RUNNER_ERROR = "runner_error"
    # The runner's own check of its device (runner/devices.py), made after a job failed, found it
    # unusable: CUDA unavailable in the sandbox, a driver error, a device that vanished, or most
    # of its memory held by other processes. Never taken from the submission's own words.
    DEVICE_ERROR = "device_error"
    LEASE_EXPIRED = "lease_expired"
    NEVER_CLAIMED = "never_claimed"


USER_ERROR_KINDS = frozenset(
    {
        ErrorKind.INVALID_ARTIFACT,
        ErrorKind.BAD_HPARAMS,
        ErrorKind.RUNTIME_ERROR,
        ErrorKind.WRONG_OUTPUT,
        ErrorKind.NOT_FINITE,
        ErrorKind.TIMEOUT,
        ErrorKind.OUT_OF_MEMORY,
        ErrorKind.SANDBOX_VIOLATION,
    }
)
INFRASTRUCTURE_ERROR_KINDS = frozenset(
    {
        ErrorKind.DATASET_MISSING,
        ErrorKind.DOWNLOAD_FAILED,
        ErrorKind.SANDBOX_UNAVAILABLE,
        ErrorKind.RUNNER_ERROR,
        ErrorKind.DEVICE_ERROR,
        ErrorKind.LEASE_EXPIRED,
        ErrorKind.NEVER_CLAIMED,
    }
)
ERROR_KINDS = USER_ERROR_KINDS | INFRASTRUCTURE_ERROR_KINDS


def is_user_error(kind: str) -> bool:
    return kind in USER_ERROR_KINDS


# Failures certain to recur on every task of a submission, because they depend only on the
# artifact and its hyperparameters (the tasks of one benchmark share the artifact contract):
# a file that does not load or breaks the contract, hyperparameters it refuses. These repeat
# whatever the runner says.
ALWAYS_REPEATING_KINDS = frozenset({ErrorKind.INVALID_ARTIFACT, ErrorKind.BAD_HPARAMS})
# Kinds that repeat only when the runner says so: a runtime_error the submission's own import
# raised (an ImportError), where the same code would fail before any data is read. Every
# other kind depends on the data, the budget or the machine (not_finite, timeout,
# out_of_memory, sandbox_violation, wrong_output: a shape can differ on one task's last batch)
# or is the platform's, retried: never repeats. docs/errors.md has the column.
REPEATABLE_KINDS = ALWAYS_REPEATING_KINDS | {ErrorKind.RUNTIME_ERROR}


def failure_repeats(kind: str, repeats: Any = None) -> bool:
    """Whether a failure of ``kind`` that the runner marked ``repeats`` (None: not marked) is
    certain to recur on the submission's other tasks. Raises SpecError when ``repeats`` is
    neither a boolean nor None, or is true for a kind that cannot repeat."""
    if repeats is not None and not isinstance(repeats, bool):
        raise SpecError(f"repeats must be true or false, not {type(repeats).__name__}")
    if repeats and kind not in REPEATABLE_KINDS:
        raise SpecError(f"a {kind} failure cannot repeat on every task; only "
                        f"{', '.join(sorted(REPEATABLE_KINDS))} can")
    return kind in ALWAYS_REPEATING_KINDS or bool(repeats)


class EvaluationError(Exception):
    """An evaluation that ended without a result; ``kind`` is one of :class:`ErrorKind`.
    ``repeats``: the failure would recur on the submission's other tasks (see
    :func:`failure_repeats`; always true for ALWAYS_REPEATING_KINDS, ignored for kinds that
    cannot repeat)."""

    def __init__(self, kind: str, message: str, log_tail: str = "", *, repeats: bool = False):
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown error kind {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.log_tail = log_tail
        self.repeats = failure_repeats(kind, bool(repeats) and kind in REPEATABLE_KINDS)


# --------------------------------------------------------------------------------------------
# Submission kinds and artifact formats.
# --------------------------------------------------------------------------------------------
KINDS = ("classifier", "optimizer", "denoiser")
# "safetensors": weights only, with hyperparameters naming a library architecture (runner/architectures.py).
MODEL_FORMATS = ("torchscript", "pt2", "onnx", "safetensors")
OPTIMIZER_FORMAT = "python"
# A builtin baseline: a tiny JSON file naming reference code the runner itself ships and runs
# outside the sandbox (BM3D is compiled library code driven from Python; it cannot be exported).
# Only maintainers' baselines may use it: the site refuses it from anyone else, and the runner
# refuses a job whose submission is not flagged as a baseline.
BUILTIN_FORMAT = "builtin"
BUILTIN_BASELINES = {"denoiser": ("bm3d",)}
BUILTIN_MAX_BYTES = 1024
# The hyperparameters a model submission may carry (the platform's evaluation settings, never
# training knobs); both the site (at upload) and the tracks check them.
MODEL_HPARAM_KEYS = {
    "classifier": ("precision", "channels_last", "clean_top1",
                   "architecture", "num_classes", "mean", "std", "pretrained"),  # the last five: .safetensors
    "denoiser": ("precision", "channels_last"),
}

PICKLE_ADVICE = (
    "Pickled files are refused because unpickling runs arbitrary code. Export the model instead: "
    "torch.jit.save(torch.jit.script(model), 'model.pt'), "
    "torch.export.save(torch.export.export(model, (example,)), 'model.pt2'), "
    "or torch.onnx.export(model, (example,), 'model.onnx'); "
    "or save a library architecture's weights: safetensors.torch.save_file(model.state_dict(), 'model.safetensors')."
)


def sniff_model_format(head: bytes, data: bytes | BinaryIO | None = None) -> str:
    """Name the format of a model artifact from its content, never from its file name.

    ``head`` is at least the first 4 KiB; ``data`` the whole file (bytes or a seekable binary
    file) when it is a zip archive (TorchScript, ExportedProgram and torch.save checkpoints are
    all zips). Raises SpecError
    with advice a person can act on.
    """
    if not head:
        raise SpecError("the file is empty")
    # safetensors: a little-endian u64 header length, then the JSON header (checked before the
    # pickle test: a header length of 128-1535 bytes starts with the pickle's 0x80 0x0N too).
    if len(head) >= 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") < 1 << 32:
        return "safetensors"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        raise SpecError("this is a Python pickle. " + PICKLE_ADVICE)
    if head[:4] == b"PK\x03\x04":
        try:
            source = data if data is not None else head
            names = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source).namelist()
        except zipfile.BadZipFile as exc:
            raise SpecError(f"a damaged zip archive ({exc})") from exc
        tails = {n.split("/", 1)[1] if "/" in n else n for n in names}
        if any(t.startswith("code/") for t in tails) and "constants.pkl" in tails:
            return "torchscript"
        if "archive_format" in tails or any(t.startswith("models/") and t.endswith(".json") for t in tails):
            return "pt2"
        if "data.pkl" in tails:
            raise SpecError("this is a torch.save checkpoint (a pickle inside a zip). " + PICKLE_ADVICE)
        raise SpecError("a zip archive that is neither TorchScript nor an ExportedProgram (.pt2)")
    if head.lstrip()[:1] == b"{":
        raise SpecError("a JSON file, not a model: upload TorchScript (.pt), an ExportedProgram (.pt2) or "
                        "ONNX (.onnx) (JSON artifacts are reserved for the platform's builtin baselines)")
    # ONNX: a protobuf ModelProto whose first field is ir_version (field 1, varint → 0x08) and
    # which names a producer or graph soon after.
    if head[:1] == b"\x08" and (b"\x12" in head[:16] or b"\x3a" in head[:64]):
        return "onnx"
    raise SpecError("unrecognised file: upload TorchScript (.pt), an ExportedProgram (.pt2), ONNX (.onnx) or "
                    "classifier weights as .safetensors (with their architecture in the hyperparameters)")


def read_builtin_baseline(data: bytes, kind: str) -> str:
    """The reference method a builtin-baseline artifact names: the file is exactly
    ``{"builtin_baseline": "<name>"}`` with a name from BUILTIN_BASELINES[kind]. Raises SpecError."""
    if len(data) > BUILTIN_MAX_BYTES:
        raise SpecError(f"a builtin-baseline file is a few bytes of JSON, not {len(data)} bytes")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SpecError(f"a builtin-baseline file must be JSON: {exc}") from exc
    if not isinstance(doc, dict) or set(doc) != {"builtin_baseline"}:
        raise SpecError('a builtin-baseline file is exactly {"builtin_baseline": "<name>"}')
    known = BUILTIN_BASELINES.get(kind, ())
    if doc["builtin_baseline"] not in known:
        raise SpecError(f"no builtin {kind} baseline {str(doc['builtin_baseline'])[:40]!r}; "
                        f"known: {', '.join(known) or 'none'}")
    return str(doc["builtin_baseline"])


# --------------------------------------------------------------------------------------------
# Job spec: what the site hands a runner when it claims a job.
# --------------------------------------------------------------------------------------------
@dataclass
class TaskSpec:
    slug: str
    kind: str
    dataset: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    time_limit_s: int = 600


@dataclass
class SubmissionSpec:
    id: int
    kind: str
    artifact_format: str
    artifact_sha256: str
    artifact_size: int
    hparams: dict[str, Any] = field(default_factory=dict)
    is_baseline: bool = False


@dataclass
class JobSpec:
    job_id: int
    attempt: int
    task: TaskSpec
    submission: SubmissionSpec
    lease_seconds: int = 120
    heartbeat_seconds: int = 20
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> JobSpec:
        if not isinstance(doc, dict):
            raise SpecError("job spec must be an object")
        if doc.get("schema") != SCHEMA_VERSION:
            raise SpecError(f"job spec schema {doc.get('schema')!r}, this runner speaks {SCHEMA_VERSION}")
        try:
            task = TaskSpec(**doc["task"])
            submission = SubmissionSpec(**doc["submission"])
            spec = cls(
                job_id=int(doc["job_id"]),
                attempt=int(doc["attempt"]),
                task=task,
                submission=submission,
                lease_seconds=int(doc.get("lease_seconds", 120)),
                heartbeat_seconds=int(doc.get("heartbeat_seconds", 20)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecError(f"malformed job spec: {exc}") from exc
        if task.kind not in KINDS or submission.kind != task.kind:
            raise SpecError(f"task kind {task.kind!r} does not fit submission kind {submission.kind!r}")
        return spec


# --------------------------------------------------------------------------------------------
# Result documents (shared/PROTOCOLS.md "Result keys"); the keys each task requires are the
# catalogue's (runner/catalogue.py).
# --------------------------------------------------------------------------------------------
def finite_float(value: Any) -> float | None:
    """``value`` as a float when it is a finite JSON number (an int or float, not a bool), else
    None. An integer too large for a float (JSON allows ``1`` followed by 400 zeros) is None where
    ``math.isfinite`` would raise OverflowError; every reader of numbers from the wire uses this."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _finite_number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{where} must be a number, got {type(value).__name__}")
    number = finite_float(value)
    if number is None:
        shown = value if isinstance(value, float) else f"an integer of {value.bit_length()} bits"
        raise SpecError(f"{where} is {shown}, not a finite number")
    return number


def _check_interval(value: Any, where: str) -> None:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise SpecError(f"{where} must be [low, high]")
    low = _finite_number(value[0], f"{where}[0]")
    high = _finite_number(value[1], f"{where}[1]")
    if low > high:
        raise SpecError(f"{where} has low {low} above high {high}")


def validate_result(doc: Any, task_slug: str) -> dict[str, Any]:
    """Check a result document for ``task_slug``; return it unchanged.

    Raises SpecError naming the first fault: not an object, another schema or task, metrics
    that are empty or not finite numbers, a metric or curve the catalogue requires of the task
    missing (runner.catalogue.required_metrics; a task the catalogue lacks requires none),
    a ci95 entry that is not ``[low, high]`` with low <= high, a section that is not an object."""
    if not isinstance(doc, dict):
        raise SpecError("result must be an object")
    if doc.get("schema") != SCHEMA_VERSION:
        raise SpecError(f"result schema {doc.get('schema')!r}, expected {SCHEMA_VERSION}")
    if doc.get("task") != task_slug:
        raise SpecError(f"result is for task {doc.get('task')!r}, not {task_slug!r}")
    metrics = doc.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        raise SpecError("result.metrics must be a non-empty object")
    for key, value in metrics.items():
        _finite_number(value, f"metrics.{key}")
    missing = [k for k in required_metrics(task_slug) if k not in metrics]
    if missing:
        raise SpecError(f"result.metrics lacks {', '.join(missing)}")
    ci95 = doc.get("ci95", {})
    if not isinstance(ci95, dict):
        raise SpecError("result.ci95 must be an object")
    for key, value in ci95.items():
        _check_interval(value, f"ci95.{key}")
    for section in ("breakdown", "curves", "env", "timing"):
        if not isinstance(doc.get(section, {}), dict):
            raise SpecError(f"result.{section} must be an object")
    curves = doc.get("curves", {})
    missing = [k for k in required_curves(task_slug) if k not in curves]
    if missing:
        raise SpecError(f"result.curves lacks {', '.join(missing)}")
    timing = doc.get("timing", {})
    if "wall_s" in timing:
        _finite_number(timing["wall_s"], "timing.wall_s")
    return doc


def make_result(
    task_slug: str,
    metrics: dict[str, float],
    *,
    ci95: dict[str, list[float]] | None = None,
    breakdown: dict[str, Any] | None = None,
    curves: dict[str, Any] | None = None,
    env: dict[str, Any] | None = None,
    timing: dict[str, float] | None = None,
) -> dict[str, Any]:
    """A result document for ``task_slug`` (unchecked: :func:`validate_result` checks it).

    ``metrics``: key → finite number (percent for accuracies, dB for PSNR, seconds for times);
    ``ci95``: key → ``[low, high]`` in the metric's unit; ``breakdown``, ``curves``, ``env``:
    JSON-able objects; ``timing``: key → seconds (``wall_s``). Absent sections become ``{}``."""
    return {
        "schema": SCHEMA_VERSION,
        "task": task_slug,
        "metrics": metrics,
        "ci95": ci95 or {},
        "breakdown": breakdown or {},
        "curves": curves or {},
        "env": env or {},
        "timing": timing or {},
    }


# --------------------------------------------------------------------------------------------
# Sizes of what a runner reports on an attempt (characters): the runner trims what it sends
# to them and the site keeps at most them, so neither side cuts what the other kept.
# --------------------------------------------------------------------------------------------
MAX_PROGRESS_MESSAGE_CHARS = 200  # a heartbeat's message, its first characters (a column of this size)
MAX_FAILURE_MESSAGE_CHARS = 4000  # a failure's message, its first characters
MAX_LOG_TAIL_CHARS = 20_000  # a result's or failure's log, its last characters


# --------------------------------------------------------------------------------------------
# Node reports: what a runner says of itself on every node heartbeat (and, names only, in
# every claim). The site treats them as hostile input: shapes, sizes and characters are capped.
# --------------------------------------------------------------------------------------------
MAX_NODE_POOLS = 20
MAX_NODE_DATASETS = 200
MAX_DEVICE_CHARS = 120
MAX_CHECKSUM_CHARS = 200
_POOL_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,49}")
_DATASET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./-]{0,99}")
_CHECKSUM_RE = re.compile(r"[\x21-\x7e]([\x20-\x7e]{0,198}[\x21-\x7e])?")  # printable ASCII


def validate_node_report(body: dict[str, Any]) -> dict[str, Any]:
    """The checked parts of a node report: ``{"pools": [str] | None, "device": str | None,
    "datasets": [{"name", "synthetic": bool | None, "checksum": str | None}] | None}`` (None: the
    key was absent). A dataset may also be given as its bare name (older runners; synthetic and
    checksum then unknown). Duplicate names keep their first entry. Raises SpecError naming the
    first offending field."""
    out: dict[str, Any] = {"pools": None, "device": None, "datasets": None}
    pools = body.get("pools")
    if pools is not None:
        if not isinstance(pools, list) or len(pools) > MAX_NODE_POOLS:
            raise SpecError(f"pools must be a list of at most {MAX_NODE_POOLS} pool names")
        for pool in pools:
            if not isinstance(pool, str) or not _POOL_RE.fullmatch(pool):
                raise SpecError(f"pool {str(pool)[:60]!r} is not a pool name (lower-case letters, digits, '_.-')")
        out["pools"] = list(dict.fromkeys(pools))
    device = body.get("device")
    if device is not None:
        if not isinstance(device, str) or len(device) > MAX_DEVICE_CHARS or not device.isprintable():
            raise SpecError(f"device must be printable text of at most {MAX_DEVICE_CHARS} characters")
        out["device"] = device.strip()
    datasets = body.get("datasets")
    if datasets is not None:
        if not isinstance(datasets, list) or len(datasets) > MAX_NODE_DATASETS:
            raise SpecError(f"datasets must be a list of at most {MAX_NODE_DATASETS} entries")
        held: dict[str, dict[str, Any]] = {}
        for entry in datasets:
            entry = {"name": entry} if isinstance(entry, str) else entry
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) \
                    or not _DATASET_RE.fullmatch(entry["name"]):
                raise SpecError("each dataset must be a catalogue dataset id or {\"name\", \"synthetic\", "
                                "\"checksum\"}")
            synthetic, checksum = entry.get("synthetic"), entry.get("checksum")
            if synthetic is not None and not isinstance(synthetic, bool):
                raise SpecError(f"dataset {entry['name']}: synthetic must be true, false or null")
            if checksum is not None and (not isinstance(checksum, str) or not _CHECKSUM_RE.fullmatch(checksum)):
                raise SpecError(f"dataset {entry['name']}: checksum must be printable ASCII of at most "
                                f"{MAX_CHECKSUM_CHARS} characters, or null")
            held.setdefault(entry["name"], {"name": entry["name"], "synthetic": synthetic, "checksum": checksum})
        out["datasets"] = list(held.values())
    return out


# --------------------------------------------------------------------------------------------
# Broker URLs. Both sides must read CELERY_BROKER_URL the same way; the embedded default
# ``filesystem:///abs/folder`` (a broker that needs no server) names the folder the site and
# local runners share.
# --------------------------------------------------------------------------------------------
class _NoHostnameFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No hostname was supplied" not in record.getMessage()


def celery_broker_settings(url: str) -> dict[str, Any]:
    """Celery settings (``broker_url``, ``broker_transport_options``) for a broker URL."""
    if url.startswith("filesystem://"):
        folder = url[len("filesystem://") :] or "/tmp/leaderboard-broker"
        # A folder has no host name; kombu warns about that on every connection.
        kombu_log = logging.getLogger("kombu.connection")
        if not any(isinstance(f, _NoHostnameFilter) for f in kombu_log.filters):
            kombu_log.addFilter(_NoHostnameFilter())

        for sub in ("queue", "processed", "control"):
            os.makedirs(os.path.join(folder, sub), exist_ok=True)
        return {
            "broker_url": "filesystem://",
            "broker_transport_options": {
                "data_folder_in": os.path.join(folder, "queue"),
                "data_folder_out": os.path.join(folder, "queue"),
                "processed_folder": os.path.join(folder, "processed"),
                "control_folder": os.path.join(folder, "control"),
                "store_processed": False,
            },
        }
    options: dict[str, Any] = {}
    if url.startswith(("redis://", "rediss://")):
        # A long evaluation must not be redelivered while it still runs: the visibility timeout
        # must exceed the longest task time limit (the lease and reaper handle dead runners).
        options["visibility_timeout"] = 6 * 3600
    return {"broker_url": url, "broker_transport_options": options}
