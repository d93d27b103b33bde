"""The runner node's Celery app: one task, ``runner.evaluate(job_id)``, consumed from the queues
``runner.<pool>``, one job at a time per device. The broker only wakes the runner up; the site's
database is the truth, reached through the runner HTTP API.

Per job (process_job):
1. claim the job (409: another attempt is live or the job ended, so log and return);
2. download the artifact and check its sha256;
3. heartbeat every ``spec.heartbeat_seconds`` with the latest progress; a 409 answer means the site
   took the job back, so the sandboxed program is stopped and nothing is posted;
4. evaluate in the sandbox (runner/evaluate.py, the same path as `runner run`);
5. post the result, or the failure with its kind (unexpected exceptions: runner_error) and
   whether it would recur on the submission's other tasks (the site then skips them);
6. after a classifier's result, upload its per-image outcomes (runner/metrics/per_image.py), which
   the site checks against the sha256 the result names. A refused or failed upload is logged and
   leaves the result standing: the job has succeeded, only its per-image views stay empty.
"""
from __future__ import annotations

import collections
import logging
import os
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from celery import Celery
from celery.signals import worker_ready, worker_shutting_down

import runner
from runner import data_admin
from runner import datasets as runner_datasets
from runner.client import SiteClient, SiteConflict, SiteError
from runner.evaluate import evaluate
from runner.spec import EVALUATE_TASK_NAME, ErrorKind, EvaluationError, JobSpec, celery_broker_settings
from runner.workdir import locked_folder

log = logging.getLogger(__name__)

NODE_HEARTBEAT_SECONDS = 30.0
PER_IMAGE_FILE = "result.per_image.npz"  # in the attempt's private folder, beside the artifact

# No Django fixup even when DJANGO_SETTINGS_MODULE is set: the runner never imports Django.
app = Celery("runner", fixups=[], set_as_current=False)
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_concurrency=1,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_cancel_long_running_tasks_on_connection_loss=False,
)


def default_broker_url() -> str:
    """The site's embedded default: the filesystem broker in its var/ folder (LEADERBOARD_VAR,
    else the source checkout's var/, else ./var)."""
    var = os.environ.get("LEADERBOARD_VAR")
    if not var:
        checkout = Path(runner.__file__).resolve().parent.parent
        var = str(checkout / "var") if (checkout / "pyproject.toml").exists() else str(Path.cwd() / "var")
    return f"filesystem://{Path(var).resolve() / 'broker'}"


def configure(broker_url: str) -> None:
    app.conf.update(**celery_broker_settings(broker_url))


if os.environ.get("CELERY_BROKER_URL"):
    configure(os.environ["CELERY_BROKER_URL"])


@dataclass
class WorkerSettings:
    """What a worker process needs for its jobs, read from the environment `runner work` sets."""

    server: str
    token: str
    pools: list[str] = field(default_factory=lambda: ["cpu"])
    data_root: Path = field(default_factory=runner_datasets.default_data_root)
    trust: bool = False
    device: str = "cpu"

    @classmethod
    def from_env(cls) -> WorkerSettings:
        pools = [p for p in os.environ.get("RUNNER_POOLS", "cpu").replace(",", " ").split() if p]
        return cls(
            server=os.environ.get("RUNNER_SERVER", ""),
            token=os.environ.get("RUNNER_TOKEN", ""),
            pools=pools or ["cpu"],
            data_root=runner_datasets.default_data_root(),
            trust=os.environ.get("RUNNER_TRUST", "").strip().lower() in ("1", "true", "yes", "on"),
            device=os.environ.get("RUNNER_DEVICE") or "cpu",
        )


# --------------------------------------------------------------------------------------------
# One job.
# --------------------------------------------------------------------------------------------
class _JobLog(logging.Handler):
    """Keeps this job's runner log lines, so the site can show them beside the outcome."""

    def __init__(self, lines: int = 200):
        super().__init__(logging.INFO)
        self.lines: collections.deque[str] = collections.deque(maxlen=lines)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def __enter__(self) -> _JobLog:
        logger = logging.getLogger("runner")
        self._level = logger.level
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)  # the site wants this job's INFO lines even if the console does not
        logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logger = logging.getLogger("runner")
        logger.removeHandler(self)
        logger.setLevel(self._level)

    def tail(self) -> str:
        return "\n".join(self.lines)


class Heartbeat:
    """Extends the job's lease every ``spec.heartbeat_seconds`` with the latest progress. When the
    site answers 409 it sets ``cancel``, which stops the sandboxed program."""

    def __init__(self, client: SiteClient, spec: JobSpec, cancel: threading.Event):
        self.client, self.spec, self.cancel = client, spec, cancel
        self.progress, self.message = 0.0, "claimed"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{spec.job_id}", daemon=True)

    def update(self, progress: float, message: str = "") -> None:
        self.progress, self.message = max(self.progress, progress), message

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.spec.heartbeat_seconds + 35)

    def _run(self) -> None:
        interval = max(0.2, float(self.spec.heartbeat_seconds))
        while not self._stop.wait(interval):
            try:
                alive = self.client.heartbeat(self.spec.job_id, self.spec.attempt, self.progress, self.message)
            except SiteError as exc:
                log.warning("job %s: heartbeat failed (%s); the lease may run out", self.spec.job_id, exc)
                continue
            if not alive:
                log.warning("job %s: the site says attempt %s is no longer live; stopping", self.spec.job_id,
                            self.spec.attempt)
                self.cancel.set()
                return


def _format_traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-8000:]


def process_job(job_id: int, client: SiteClient, *, data_root: Path | str, trust: bool = False, device: str = "cpu",
                pools: list[str] | tuple[str, ...] = ()) -> str:
    """Claim, evaluate and report one job. Returns what happened: ``not_claimed``, ``succeeded``,
    ``failed`` (a failure was reported), ``dropped`` (the site took the job back; nothing
    reported) or ``unreported`` (the site could not be reached; the lease will expire)."""
    with _JobLog() as job_log:
        try:
            spec = client.claim(job_id, [entry.name for entry in data_admin.held(data_root)], pools=pools)
        except SiteError as exc:
            if exc.status_code != 404:
                raise
            log.warning("job %s: the site has no such job", job_id)
            return "not_claimed"
        if spec is None:
            log.info("job %s: not claimed (a live attempt exists or it has ended)", job_id)
            return "not_claimed"
        log.info("job %s: attempt %s of %s for submission %s", job_id, spec.attempt, spec.task.slug,
                 spec.submission.id)
        cancel = threading.Event()
        beat = Heartbeat(client, spec, cancel)
        beat.start()
        try:
            outcome = _run_attempt(spec, client, beat, cancel, job_log, data_root=Path(data_root), trust=trust,
                                   device=device)
        finally:
            beat.stop()
        log.info("job %s: %s", job_id, outcome)
        return outcome


def _run_attempt(spec: JobSpec, client: SiteClient, beat: Heartbeat, cancel: threading.Event, job_log: _JobLog, *,
                 data_root: Path, trust: bool, device: str) -> str:
    job_id, attempt = spec.job_id, spec.attempt
    try:
        with locked_folder(f"runner-artifact-{job_id}-") as tmp:
            artifact = tmp / "artifact"
            client.download_artifact(job_id, attempt, artifact, expected_sha256=spec.submission.artifact_sha256,
                                     max_bytes=spec.submission.artifact_size or None)
            beat.update(0.01, "artifact downloaded")
            result = evaluate(spec, artifact, data_root=data_root, trust=trust, device=device, progress=beat.update,
                              cancel=cancel, per_image_out=tmp / PER_IMAGE_FILE)
            per_image = (tmp / PER_IMAGE_FILE).read_bytes() if "per_image" in result.get("files", {}) else None
    except SiteConflict:
        return "dropped"
    except EvaluationError as exc:
        if cancel.is_set():
            return "dropped"
        log.info("job %s: %s: %s%s", job_id, exc.kind, exc.message,
                 " (it would recur on every task of the submission)" if exc.repeats else "")
        return _report_failure(client, spec, exc.kind, exc.message, "\n".join(filter(None, [exc.log_tail,
                                                                                             job_log.tail()])),
                               repeats=exc.repeats)
    except Exception as exc:  # the runner's own failure: infrastructure, never the user's
        if cancel.is_set():
            return "dropped"
        log.exception("job %s: the runner failed", job_id)
        return _report_failure(client, spec, ErrorKind.RUNNER_ERROR, f"the runner failed: {type(exc).__name__}: "
                               f"{exc}", _format_traceback(exc))
    if cancel.is_set():
        return "dropped"
    try:
        client.post_result(job_id, attempt, result, job_log.tail())
    except SiteConflict:
        log.warning("job %s: attempt %s is no longer live; result dropped", job_id, attempt)
        return "dropped"
    except SiteError as exc:
        if exc.status_code == 400:
            return _report_failure(client, spec, ErrorKind.RUNNER_ERROR, f"the site refused the result: {exc}",
                                   job_log.tail())
        log.error("job %s: could not post the result: %s", job_id, exc)
        return "unreported"
    if per_image is not None:
        _post_per_image(client, spec, per_image)
    return "succeeded"


def _post_per_image(client: SiteClient, spec: JobSpec, payload: bytes) -> None:
    """Upload the per-image file of the result just posted; a failure is logged, never reported:
    the result stands."""
    try:
        client.post_per_image(spec.job_id, spec.attempt, payload)
    except SiteError as exc:  # SiteConflict and SiteUnreachable included
        log.error("job %s: the per-image outcomes were not stored: %s", spec.job_id, exc)
    else:
        log.info("job %s: per-image outcomes stored (%d bytes)", spec.job_id, len(payload))


def _report_failure(client: SiteClient, spec: JobSpec, kind: str, message: str, log_tail: str, *,
                    repeats: bool = False) -> str:
    try:
        client.post_failure(spec.job_id, spec.attempt, kind, message, log_tail, repeats=repeats)
    except SiteConflict:
        return "dropped"
    except SiteError as exc:
        log.error("job %s: could not report the failure: %s", spec.job_id, exc)
        return "unreported"
    return "failed"


@app.task(name=EVALUATE_TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def evaluate_job(job_id: int) -> str:
    settings = WorkerSettings.from_env()
    with SiteClient(settings.server, settings.token) as client:
        return process_job(int(job_id), client, data_root=settings.data_root, trust=settings.trust,
                           device=settings.device, pools=settings.pools)


# --------------------------------------------------------------------------------------------
# Node heartbeat: tells the site this node is alive, which pools it serves, its device, and which
# datasets it holds (synthetic or real, with a checksum once known), whether or not a job runs.
# --------------------------------------------------------------------------------------------
_DEVICE_NAME = """
import sys, torch
index = int(sys.argv[1])
print(torch.cuda.get_device_name(index) if torch.cuda.is_available() and index < torch.cuda.device_count()
      else "(CUDA unavailable)")
"""


def describe_device(device: str) -> str:
    """``"cpu"``, or a CUDA device with the name torch gives it (``"cuda:0 NVIDIA H200"``).
    Asked in a child process: CUDA set up in this (the Celery parent) process would be broken
    in every job process forked from it later."""
    if not device.startswith("cuda"):
        return device
    index = device.partition(":")[2] or "0"
    try:
        done = subprocess.run([sys.executable, "-c", _DEVICE_NAME, index], capture_output=True, text=True,
                              timeout=120, check=True)
        name = done.stdout.strip().splitlines()[-1]
    except (OSError, subprocess.SubprocessError, IndexError) as exc:
        log.warning("could not name device %s: %s", device, exc)
        name = "(name unknown)"
    return f"{device} {name}"[:120]


class NodeHeartbeat:
    """Every ``interval`` seconds: one node heartbeat (runner/spec.py's node report). After each
    beat it works out the checksum of one more dataset it holds (runner.data_admin.fingerprint,
    once per dataset folder state, so big folders are listed once and never delay a beat)."""

    def __init__(self, settings: WorkerSettings, interval: float = NODE_HEARTBEAT_SECONDS):
        self.settings, self.interval = settings, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="node-heartbeat", daemon=True)
        self._device: str | None = None
        self._checksums: dict[tuple[str, int], str | None] = {}

    def _state(self, name: str) -> tuple[str, int]:
        """A dataset as far as its checksum goes: its name and its folder's mtime (0: bundled)."""
        try:
            return name, (Path(self.settings.data_root) / name).stat().st_mtime_ns
        except OSError:
            return name, 0

    def report(self) -> list[dict]:
        return [{"name": e.name, "synthetic": e.synthetic, "checksum": self._checksums.get(self._state(e.name))}
                for e in data_admin.held(self.settings.data_root)]

    def fill_one_checksum(self, held: list[dict]) -> bool:
        """Work out the checksum of the first held dataset without one; False when none is left."""
        for entry in held:
            key = self._state(entry["name"])
            if key not in self._checksums:
                try:
                    self._checksums[key] = data_admin.fingerprint(entry["name"], self.settings.data_root)
                except Exception:  # a damaged folder: its checksum stays unknown, the beat goes on
                    log.warning("no checksum for %s", entry["name"], exc_info=True)
                    self._checksums[key] = None
                return True
        return False

    def beat_once(self, client: SiteClient) -> list[dict]:
        if self._device is None:
            self._device = describe_device(self.settings.device)
        held = self.report()
        client.node_heartbeat(runner.__version__, self.settings.pools, held, device=self._device)
        return held

    def _run(self) -> None:
        with SiteClient(self.settings.server, self.settings.token, retries=1) as client:
            while True:
                held: list[dict] = []
                try:
                    held = self.beat_once(client)
                except SiteError as exc:
                    log.warning("node heartbeat failed: %s", exc)
                # Checksums not known yet are worked out between beats, for at most half an
                # interval at a time; new ones go out with the next beat, sent at once.
                deadline, filled = time.monotonic() + self.interval / 2, False
                while time.monotonic() < deadline and not self._stop.is_set() and self.fill_one_checksum(held):
                    filled = True
                if self._stop.wait(0 if filled else self.interval):
                    return

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()


_node_heartbeat: NodeHeartbeat | None = None


@worker_ready.connect
def _start_node_heartbeat(**_: object) -> None:
    global _node_heartbeat
    settings = WorkerSettings.from_env()
    if settings.server and settings.token and _node_heartbeat is None:
        _node_heartbeat = NodeHeartbeat(settings)
        _node_heartbeat.start()


@worker_shutting_down.connect
def _stop_node_heartbeat(**_: object) -> None:
    if _node_heartbeat is not None:
        _node_heartbeat.stop()


# --------------------------------------------------------------------------------------------
# Starting a worker (what `runner work` calls).
# --------------------------------------------------------------------------------------------
def runner_queue(pool: str) -> str:
    return f"runner.{pool}"


def start_worker(settings: WorkerSettings, broker_url: str, *, loglevel: str = "INFO") -> None:
    """Run the Celery worker in this process until it is stopped: prefork pool, one process,
    consuming ``runner.<pool>`` for each pool. Worker processes read their settings from the
    environment, which this sets."""
    os.environ.update(
        RUNNER_SERVER=settings.server, RUNNER_TOKEN=settings.token, RUNNER_POOLS=",".join(settings.pools),
        RUNNER_DATA=str(settings.data_root), RUNNER_TRUST="1" if settings.trust else "0",
        RUNNER_DEVICE=settings.device, CELERY_BROKER_URL=broker_url,
    )
    configure(broker_url)
    if broker_url.startswith("filesystem://"):
        app.conf.worker_enable_remote_control = False  # the filesystem transport has no fanout exchanges
    queues = ",".join(runner_queue(p) for p in settings.pools)
    app.worker_main([
        "worker", "--pool=prefork", "--concurrency=1", "--prefetch-multiplier=1", f"--queues={queues}",
        f"--loglevel={loglevel}", f"--hostname=runner-{os.getpid()}@%h", "--without-gossip", "--without-mingle",
        "--without-heartbeat",
    ])
