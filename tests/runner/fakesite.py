"""A small stand-in for the site's runner HTTP API (runner/spec.py's docstring), served over real
HTTP from a thread. The runner never imports Django, so its own tests speak HTTP to this; the
real site meets real runners in tests/e2e/.

It keeps jobs in memory and records every call, so tests can assert on what the runner sent.
Behaviour a test wants to provoke (a 409, a few 503s, a wrong checksum) is set per job or queued
as one-off answers."""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from runner.catalogue import catalogue_task
from runner.spec import API_PREFIX, JobSpec, SubmissionSpec, TaskSpec, validate_result

TOKEN = "runner-token-for-tests"


@dataclass
class FakeJob:
    job_id: int
    task: str
    artifact: bytes
    hparams: dict[str, Any]
    heartbeat_seconds: int = 20
    params: dict[str, Any] | None = None  # task params; None = the catalogue's
    attempt: int = 0
    live: bool = False
    claim_status: int = 200
    heartbeat_status: int = 200
    announced_sha256: str | None = None  # what X-Artifact-SHA256 says; None = the truth
    spec_sha256: str | None = None  # what the job spec says; None = the truth
    heartbeats: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    per_images: list[bytes] = field(default_factory=list)  # the raw per-image uploads

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.artifact).hexdigest()

    def spec(self) -> JobSpec:
        task = catalogue_task(self.task)
        return JobSpec(
            job_id=self.job_id, attempt=self.attempt,
            task=TaskSpec(slug=task.slug, kind="optimizer", dataset=task.dataset, params=dict(task.params if self.params is None else self.params),
                          time_limit_s=task.time_limit_s),
            submission=SubmissionSpec(id=100 + self.job_id, kind="optimizer", artifact_format="python",
                                      artifact_sha256=self.spec_sha256 or self.sha256,
                                      artifact_size=len(self.artifact), hparams=self.hparams),
            heartbeat_seconds=self.heartbeat_seconds,
        )


class FakeSite:
    def __init__(self) -> None:
        self.jobs: dict[int, FakeJob] = {}
        self.calls: list[tuple[str, str]] = []
        self.node_heartbeats: list[dict[str, Any]] = []
        self.claims: list[dict[str, Any]] = []
        self.one_off: list[int] = []  # statuses to answer next, whatever the request
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def add_job(self, job_id: int, task: str, artifact: bytes, hparams: dict[str, Any] | None = None,
                **settings: Any) -> FakeJob:
        job = FakeJob(job_id, task, artifact, hparams or {}, **settings)
        self.jobs[job_id] = job
        return job

    def start(self) -> FakeSite:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def paths_called(self) -> list[str]:
        return [path for _, path in self.calls]


def _handler(site: FakeSite) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            """Quiet: the tests read the requests from the site's record, not from stderr."""

        def _send(self, status: int, body: dict[str, Any] | bytes, headers: dict[str, str] | None = None) -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream" if isinstance(body, bytes)
                             else "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"{}")

        def _route(self, method: str) -> None:
            url = urlparse(self.path)
            with site.lock:
                site.calls.append((method, url.path))
                one_off = site.one_off.pop(0) if site.one_off else None
            raw = url.path.endswith("/per-image/")
            body = self._body() if method == "POST" and not raw else {}
            if raw:
                payload = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if one_off is not None:
                return self._send(one_off, {"detail": f"one-off answer {one_off}"})
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._send(401, {"detail": "unknown or revoked runner token"})
            if not url.path.startswith(API_PREFIX):
                return self._send(404, {"detail": "not the runner API"})
            parts = url.path[len(API_PREFIX):].strip("/").split("/")
            if parts == ["nodes", "heartbeat"] and method == "POST":
                site.node_heartbeats.append(body)
                return self._send(200, {"name": "test-node"})
            if len(parts) != 3 or parts[0] != "jobs" or not parts[1].isdigit():
                return self._send(404, {"detail": "no such endpoint"})
            job = site.jobs.get(int(parts[1]))
            if job is None:
                return self._send(404, {"detail": f"no job {parts[1]}"})
            action = parts[2]
            if action == "claim" and method == "POST":
                site.claims.append(body)
                if job.claim_status != 200 or job.live:
                    return self._send(409, {"detail": "this job has a live attempt or has ended"})
                job.attempt += 1
                job.live = True
                return self._send(200, {"spec": job.spec().to_dict()})
            if action == "heartbeat" and method == "POST":
                job.heartbeats.append(body)
                if job.heartbeat_status != 200 or body.get("attempt") != job.attempt or not job.live:
                    return self._send(409, {"detail": "this attempt is no longer live: stop working on it"})
                return self._send(200, {"lease_expires_at": "2030-01-01T00:00:00+00:00"})
            if action == "artifact" and method == "GET":
                attempt = int(parse_qs(url.query).get("attempt", ["0"])[0])
                if attempt != job.attempt or not job.live:
                    return self._send(409, {"detail": "this attempt is no longer live"})
                return self._send(200, job.artifact,
                                  {"X-Artifact-SHA256": job.announced_sha256 or job.sha256})
            if action == "result" and method == "POST":
                try:
                    validate_result(body.get("result"), job.task)
                except Exception as exc:  # the site answers 400 to a document that breaks the spec
                    return self._send(400, {"detail": f"result rejected: {exc}"})
                job.results.append(body)
                job.live = False
                return self._send(200, {"state": "succeeded", "duplicate": len(job.results) > 1})
            if action == "per-image" and method == "POST":
                if not job.results:
                    return self._send(409, {"detail": "post the result first, then its per-image file"})
                job.per_images.append(payload)
                return self._send(200, {"stored": True, "duplicate": len(job.per_images) > 1})
            if action == "fail" and method == "POST":
                job.failures.append(body)
                job.live = False
                return self._send(200, {"state": "failed", "duplicate": False})
            return self._send(405, {"detail": "method not allowed"})

        def do_GET(self) -> None:  # noqa: N802
            self._route("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._route("POST")

    return Handler
