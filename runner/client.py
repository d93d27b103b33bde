"""The runner's side of the runner HTTP API (runner/spec.py's docstring): claim, heartbeat,
artifact download, result and failure upload, node heartbeat.

Connection errors and 5xx answers are retried with exponential backoff, a bounded number of
times; 4xx answers never are (409 is an answer, not an error: the attempt is not ours).
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

import runner
from runner.spec import API_PREFIX, ErrorKind, EvaluationError, JobSpec, SpecError

log = logging.getLogger(__name__)

ARTIFACT_SHA256_HEADER = "X-Artifact-SHA256"


class SiteError(Exception):
    """The site refused a request (4xx other than 409), or could not be reached after retries."""

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


class SiteUnreachable(SiteError):
    """The site did not answer (connection errors or 5xx) through every retry."""


class SiteConflict(SiteError):
    """409: this attempt is not (or no longer) the live one."""


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    return str(body.get("detail", body))[:300] if isinstance(body, dict) else str(body)[:300]


class SiteClient:
    def __init__(self, server: str, token: str, *, timeout: float = 30.0, retries: int = 5, backoff_s: float = 0.5,
                 max_backoff_s: float = 30.0, sleep: Callable[[float], None] = time.sleep):
        if not server:
            raise ValueError("the site's URL is required (--server or RUNNER_SERVER)")
        if not token:
            raise ValueError("a runner token is required (--token or RUNNER_TOKEN)")
        self.server = server.rstrip("/")
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.server + API_PREFIX,
            headers={"Authorization": f"Bearer {token}", "User-Agent": f"leaderboard-runner/{runner.__version__}"},
            timeout=timeout,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SiteClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------------------
    def _with_retries(self, what: str, call: Callable[[], httpx.Response]) -> httpx.Response:
        """Run ``call`` until it answers below 500; back off on connection errors and 5xx."""
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                response = call()
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 500:
                    return response
                problem = f"HTTP {response.status_code}: {_detail(response)}"
            if attempt == self.retries:
                raise SiteUnreachable(f"{what} failed after {self.retries + 1} tries: {problem}")
            log.warning("%s: %s; retrying in %.1f s", what, problem, delay)
            self._sleep(delay)
            delay = min(delay * 2, self.max_backoff_s)
        raise AssertionError("unreachable")

    def _post(self, path: str, body: dict[str, Any], what: str) -> httpx.Response:
        return self._with_retries(what, lambda: self._http.post(path, json=body))

    @staticmethod
    def _raise_for(response: httpx.Response, what: str) -> None:
        if response.status_code == 409:
            raise SiteConflict(f"{what}: {_detail(response)}", 409)
        if response.status_code >= 400:
            raise SiteError(f"{what}: HTTP {response.status_code}: {_detail(response)}", response.status_code)

    # ----------------------------------------------------------------------------------------
    def claim(self, job_id: int, datasets: Iterable[str] = (), *, pools: Iterable[str] = (),
              version: str = runner.__version__) -> JobSpec | None:
        """Start an attempt on the job; None when another attempt is live, the job has ended, or
        the site refused it because ``datasets`` (the names this node holds) lacks its dataset
        (the job then waits for a runner that holds it)."""
        response = self._post(f"jobs/{job_id}/claim/", {"version": version, "pools": list(pools),
                                                        "datasets": list(datasets)}, f"claim job {job_id}")
        if response.status_code == 409:
            log.info("job %s: not claimed: %s", job_id, _detail(response))
            return None
        self._raise_for(response, f"claim job {job_id}")
        try:
            return JobSpec.from_dict(response.json()["spec"])
        except (ValueError, KeyError, TypeError, SpecError) as exc:
            raise SiteError(f"claim job {job_id}: the site sent a job spec this runner cannot read: {exc}") from exc

    def heartbeat(self, job_id: int, attempt: int, progress: float, message: str = "") -> bool:
        """Extend the lease; False when the attempt is no longer live (stop working on it)."""
        body = {"attempt": attempt, "progress": round(min(1.0, max(0.0, progress)), 4), "message": message[:200]}
        response = self._post(f"jobs/{job_id}/heartbeat/", body, f"heartbeat job {job_id}")
        if response.status_code == 409:
            return False
        self._raise_for(response, f"heartbeat job {job_id}")
        return True

    def download_artifact(self, job_id: int, attempt: int, dest: Path | str, *, expected_sha256: str | None = None,
                          max_bytes: int | None = None) -> str:
        """Stream the artifact to ``dest`` and return its sha256, which must equal the
        X-Artifact-SHA256 header and ``expected_sha256`` (the job spec's); otherwise the file is
        removed and EvaluationError(DOWNLOAD_FAILED) raised."""
        dest = Path(dest)
        what = f"download the artifact of job {job_id}"
        delay = self.backoff_s
        for try_number in range(self.retries + 1):
            try:
                return self._download_once(job_id, attempt, dest, expected_sha256, max_bytes, what)
            except (httpx.TransportError, _ServerError) as exc:
                dest.unlink(missing_ok=True)
                if try_number == self.retries:
                    raise EvaluationError(ErrorKind.DOWNLOAD_FAILED, f"{what} failed after {self.retries + 1} tries: "
                                          f"{exc}") from exc
                log.warning("%s: %s; retrying in %.1f s", what, exc, delay)
                self._sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
        raise AssertionError("unreachable")

    def _download_once(self, job_id: int, attempt: int, dest: Path, expected_sha256: str | None,
                       max_bytes: int | None, what: str) -> str:
        digest = hashlib.sha256()
        size = 0
        with self._http.stream("GET", f"jobs/{job_id}/artifact/", params={"attempt": attempt}) as response:
            if response.status_code >= 500:
                raise _ServerError(f"HTTP {response.status_code}")
            if response.status_code == 409:
                response.read()
                raise SiteConflict(f"{what}: {_detail(response)}", 409)
            if response.status_code >= 400:
                response.read()
                raise EvaluationError(ErrorKind.DOWNLOAD_FAILED,
                                      f"{what}: HTTP {response.status_code}: {_detail(response)}")
            announced = response.headers.get(ARTIFACT_SHA256_HEADER, "").strip().lower()
            with open(dest, "wb") as fh:
                for chunk in response.iter_bytes(1 << 20):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        fh.close()
                        dest.unlink(missing_ok=True)
                        raise EvaluationError(ErrorKind.DOWNLOAD_FAILED, f"{what}: more than the {max_bytes} "
                                              "bytes the job spec announced")
                    digest.update(chunk)
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
        actual = digest.hexdigest()
        problems = []
        if not announced:
            problems.append(f"the site sent no {ARTIFACT_SHA256_HEADER} header")
        elif announced != actual:
            problems.append(f"sha256 {actual} differs from the {ARTIFACT_SHA256_HEADER} header {announced}")
        if expected_sha256 and expected_sha256.lower() != actual:
            problems.append(f"sha256 {actual} differs from the job spec's {expected_sha256}")
        if problems:
            dest.unlink(missing_ok=True)
            raise EvaluationError(ErrorKind.DOWNLOAD_FAILED, f"{what}: " + "; ".join(problems))
        return actual

    def post_result(self, job_id: int, attempt: int, result: dict[str, Any], log_tail: str = "") -> dict[str, Any]:
        """Upload the result document; idempotent per attempt. SiteConflict when the attempt is
        no longer live, SiteError (400) when the site finds the document breaks the spec."""
        response = self._post(f"jobs/{job_id}/result/", {"attempt": attempt, "result": result,
                                                         "log_tail": log_tail[-20000:]}, f"post the result of job {job_id}")
        self._raise_for(response, f"post the result of job {job_id}")
        return response.json()

    def post_failure(self, job_id: int, attempt: int, kind: str, message: str, log_tail: str = "", *,
                     repeats: bool = False) -> dict[str, Any]:
        """Report a failed attempt; ``repeats``: it would recur on the submission's other tasks
        (runner/spec.py failure_repeats), so the site skips them."""
        response = self._post(f"jobs/{job_id}/fail/", {"attempt": attempt, "kind": kind, "message": message[:4000],
                                                       "log_tail": log_tail[-20000:], "repeats": repeats},
                              f"report the failure of job {job_id}")
        self._raise_for(response, f"report the failure of job {job_id}")
        return response.json()

    def node_heartbeat(self, version: str, pools: Iterable[str], datasets: Iterable[str | dict[str, Any]], *,
                       device: str | None = None) -> None:
        """Tell the site this node is alive and what it offers: its pools, its device (e.g.
        ``"cuda:0 NVIDIA H200"``) and the datasets it holds, each a name or ``{"name",
        "synthetic", "checksum"}`` (runner/spec.py). SiteError (400) when the site refuses the
        report."""
        body: dict[str, Any] = {"version": version, "pools": list(pools), "datasets": list(datasets)}
        if device is not None:
            body["device"] = device
        response = self._post("nodes/heartbeat/", body, "node heartbeat")
        self._raise_for(response, "node heartbeat")


class _ServerError(Exception):
    """A 5xx answer, retried like a connection error."""
