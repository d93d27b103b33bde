"""The runner's side of the runner HTTP API (runner/spec.py's docstring): claim, heartbeat,
artifact download, result and failure upload, node heartbeat.

One retry policy covers every call, downloads included (:meth:`SiteClient._retrying`, built on
tenacity): connection errors, 5xx and 429 answers are retried with exponential backoff, a
bounded number of times, waiting what a 429's or 503's ``Retry-After`` asks instead (capped at
the longest backoff); other 4xx answers never are (409 is an answer, not an error: the attempt is
not ours). What the runner sends is trimmed to the sizes runner/spec.py gives, which the site
stores whole.
"""
from __future__ import annotations

import email.utils
import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import tenacity

import runner
from runner.spec import (
    API_PREFIX,
    MAX_FAILURE_MESSAGE_CHARS,
    MAX_LOG_TAIL_CHARS,
    MAX_PROGRESS_MESSAGE_CHARS,
    ErrorKind,
    EvaluationError,
    JobSpec,
    SpecError,
)

log = logging.getLogger(__name__)

ARTIFACT_SHA256_HEADER = "X-Artifact-SHA256"
_T = TypeVar("_T")


class SiteError(Exception):
    """The site refused a request (4xx other than 409), or could not be reached after retries."""

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


class SiteUnreachable(SiteError):
    """The site did not answer (connection errors or 5xx) through every retry."""


class SiteConflict(SiteError):
    """409: this attempt is not (or no longer) the live one."""


def answer_detail(response: httpx.Response) -> str:
    """What a (read) answer says, at most 300 characters: its JSON ``detail``, else its body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    return str(body.get("detail", body))[:300] if isinstance(body, dict) else str(body)[:300]


class _RetryableAnswer(Exception):
    """A 5xx or 429 answer: retried like a connection error. ``retry_after``: the seconds the
    site's Retry-After asked for (429 and 503 only), None when it named none."""

    def __init__(self, problem: str, retry_after: float | None = None):
        super().__init__(problem)
        self.retry_after = retry_after


def _retryable_answer(response: httpx.Response) -> _RetryableAnswer | None:
    """The retryable error this answer is (5xx or 429), or None when it is an answer to act on."""
    if response.status_code < 500 and response.status_code != 429:
        return None
    retry_after = _retry_after_s(response) if response.status_code in (429, 503) else None
    return _RetryableAnswer(f"HTTP {response.status_code}: {answer_detail(response)}", retry_after)


def _retry_after_s(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds from now (RFC 9110: delta-seconds or an HTTP date; a
    date in the past is 0); None when absent or unreadable."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _problem(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, _RetryableAnswer) else f"{type(exc).__name__}: {exc}"


class SiteClient:
    """One site's runner API, authenticated by a runner token. ``retries``: how many times a call
    is tried again after a connection error, 5xx or 429 (so ``retries + 1`` tries in all);
    ``backoff_s`` doubles after each try up to ``max_backoff_s`` (seconds); ``sleep`` is the
    waiting function (tests pass a recorder)."""

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
    def _retrying(self, what: str) -> tenacity.Retrying:
        """The one retry policy: try again on a connection error or a :class:`_RetryableAnswer`,
        ``retries`` more times at most, waiting exponential backoff or the site's Retry-After;
        the last such error is re-raised for the caller to name. A fresh object per call, as
        tenacity keeps per-call statistics on it (the heartbeat thread shares this client)."""

        def failure(state: tenacity.RetryCallState) -> BaseException | None:
            return state.outcome.exception() if state.outcome is not None else None

        def wait(state: tenacity.RetryCallState) -> float:
            asked = getattr(failure(state), "retry_after", None)
            return min(asked, self.max_backoff_s) if asked is not None else backoff(state)

        def warn(state: tenacity.RetryCallState) -> None:
            log.warning("%s: %s; retrying in %.1f s", what, _problem(failure(state) or Exception()),
                        state.upcoming_sleep)

        backoff = tenacity.wait_exponential(multiplier=self.backoff_s, max=self.max_backoff_s)
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception_type((httpx.TransportError, _RetryableAnswer)),
            stop=tenacity.stop_after_attempt(self.retries + 1),
            wait=wait,
            sleep=self._sleep,
            before_sleep=warn,
            reraise=True,
        )

    def _with_retries(self, what: str, call: Callable[[], httpx.Response]) -> httpx.Response:
        """Run ``call`` under :meth:`_retrying` until it answers something other than 5xx or
        429; SiteUnreachable when every try failed."""

        def answer() -> httpx.Response:
            response = call()
            retryable = _retryable_answer(response)
            if retryable is not None:
                raise retryable
            return response

        return self._tried(what, answer, give_up=SiteUnreachable)

    def _tried(self, what: str, call: Callable[[], _T], *, give_up: Callable[[str], Exception]) -> _T:
        try:
            return self._retrying(what)(call)
        except (httpx.TransportError, _RetryableAnswer) as exc:
            raise give_up(f"{what} failed after {self.retries + 1} tries: {_problem(exc)}") from exc

    def _post(self, path: str, body: dict[str, Any], what: str) -> httpx.Response:
        return self._with_retries(what, lambda: self._http.post(path, json=body))

    @staticmethod
    def _raise_for(response: httpx.Response, what: str) -> None:
        if response.status_code == 409:
            raise SiteConflict(f"{what}: {answer_detail(response)}", 409)
        if response.status_code >= 400:
            raise SiteError(f"{what}: HTTP {response.status_code}: {answer_detail(response)}", response.status_code)

    # ----------------------------------------------------------------------------------------
    def claim(self, job_id: int, datasets: Iterable[str] = (), *, pools: Iterable[str] = (),
              version: str = runner.__version__) -> JobSpec | None:
        """Start an attempt on the job; None when another attempt is live, the job has ended, or
        the site refused it because ``datasets`` (the names this node holds) lacks its dataset
        (the job then waits for a runner that holds it)."""
        response = self._post(f"jobs/{job_id}/claim/", {"version": version, "pools": list(pools),
                                                        "datasets": list(datasets)}, f"claim job {job_id}")
        if response.status_code == 409:
            log.info("job %s: not claimed: %s", job_id, answer_detail(response))
            return None
        self._raise_for(response, f"claim job {job_id}")
        try:
            return JobSpec.from_dict(response.json()["spec"])
        except (ValueError, KeyError, TypeError, SpecError) as exc:
            raise SiteError(f"claim job {job_id}: the site sent a job spec this runner cannot read: {exc}") from exc

    def heartbeat(self, job_id: int, attempt: int, progress: float, message: str = "") -> bool:
        """Extend the lease; False when the attempt is no longer live (stop working on it)."""
        body = {"attempt": attempt, "progress": round(min(1.0, max(0.0, progress)), 4),
                "message": message[:MAX_PROGRESS_MESSAGE_CHARS]}
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

        def download() -> str:
            try:
                return self._download_once(job_id, attempt, dest, expected_sha256, max_bytes, what)
            except (httpx.TransportError, _RetryableAnswer):
                dest.unlink(missing_ok=True)
                raise

        return self._tried(what, download,
                           give_up=lambda message: EvaluationError(ErrorKind.DOWNLOAD_FAILED, message))

    def _download_once(self, job_id: int, attempt: int, dest: Path, expected_sha256: str | None,
                       max_bytes: int | None, what: str) -> str:
        digest = hashlib.sha256()
        size = 0
        with self._http.stream("GET", f"jobs/{job_id}/artifact/", params={"attempt": attempt}) as response:
            if response.status_code >= 400:
                response.read()  # an error's body is a short detail to quote
                retryable = _retryable_answer(response)
                if retryable is not None:
                    raise retryable
                if response.status_code == 409:
                    raise SiteConflict(f"{what}: {answer_detail(response)}", 409)
                raise EvaluationError(ErrorKind.DOWNLOAD_FAILED,
                                      f"{what}: HTTP {response.status_code}: {answer_detail(response)}")
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
        body = {"attempt": attempt, "result": result, "log_tail": log_tail[-MAX_LOG_TAIL_CHARS:]}
        response = self._post(f"jobs/{job_id}/result/", body, f"post the result of job {job_id}")
        self._raise_for(response, f"post the result of job {job_id}")
        return response.json()

    def post_per_image(self, job_id: int, attempt: int, payload: bytes | Path) -> dict[str, Any]:
        """Upload the per-image outcomes file (runner/metrics/per_image.py; its bytes or its path)
        of the result already posted for this attempt, as the raw body of ``POST
        jobs/<id>/per-image/?attempt=N``, under the one retry policy; idempotent. SiteConflict when
        the site holds no result of this attempt from this runner, SiteError when it refuses the
        file (400: its sha256 differs from the result's, or it is not a well-formed per-image
        file; 413: too large)."""
        if isinstance(payload, Path):
            payload = payload.read_bytes()
        what = f"upload the per-image outcomes of job {job_id}"
        response = self._with_retries(what, lambda: self._http.post(
            f"jobs/{job_id}/per-image/", params={"attempt": attempt}, content=payload,
            headers={"Content-Type": "application/octet-stream"}))
        self._raise_for(response, what)
        return response.json()

    def post_failure(self, job_id: int, attempt: int, kind: str, message: str, log_tail: str = "", *,
                     repeats: bool = False) -> dict[str, Any]:
        """Report a failed attempt; ``repeats``: it would recur on the submission's other tasks
        (runner/spec.py failure_repeats), so the site skips them."""
        body = {"attempt": attempt, "kind": kind, "message": message[:MAX_FAILURE_MESSAGE_CHARS],
                "log_tail": log_tail[-MAX_LOG_TAIL_CHARS:], "repeats": repeats}
        response = self._post(f"jobs/{job_id}/fail/", body, f"report the failure of job {job_id}")
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
