"""The site's REST API (/api/v1/, its schema at /api/v1/schema/) over httpx, with one retry policy.

Retries (tenacity): a read (GET) is tried again after a connection error, a 5xx answer or a 429;
an upload (POST) only when the site cannot have acted on it: the connection was never made, or
the site answered 429 or 503 *with* a ``Retry-After`` (it asks to be asked again). A 429 without
one is this site's submission quota, whose message says when it frees up: retrying would only
repeat it. Between tries the client waits what ``Retry-After`` asks (RFC 9110: seconds or an HTTP
date), else exponential backoff; a site that asks for longer than ``max_wait_s`` is not waited
for, and the error says how long it asked.

Every refusal becomes :class:`ApiError` carrying the API's own message: ``detail`` for 401, 403,
404, 429 and 503 answers, and each field's messages for a 400 (``benchmark: Object with
slug=x does not exist.``)."""
from __future__ import annotations

import email.utils
import json
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import tenacity

from leaderboard_client import __version__

API_PREFIX = "/api/v1/"


class ApiError(Exception):
    """The site refused a request, or could not be reached through every retry. ``status_code``:
    the HTTP status of the last answer, None when there was none."""

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


class _TryAgain(Exception):
    """An answer that asks for another try; ``retry_after``: the seconds it asked for, or None."""

    def __init__(self, message: str, status_code: int, retry_after: float | None):
        super().__init__(message)
        self.status_code, self.retry_after = status_code, retry_after


def retry_after_s(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds from now (delta-seconds or an HTTP date; a date in the
    past is 0); None when absent or unreadable."""
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


def api_message(response: httpx.Response) -> str:
    """The API's own words for a refused request: ``detail``, or ``field: message`` for each
    field of a 400 (``non_field_errors`` without the prefix). An answer that is not the API's
    JSON (a proxy's page, a wrong URL) is named by its status and the request's URL."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, list) and body and all(isinstance(m, str) for m in body):
        return " ".join(body)  # a ValidationError raised with a list of messages
    if isinstance(body, dict) and body:
        if isinstance(body.get("detail"), str):
            return body["detail"]
        parts = []
        for field, messages in body.items():
            text = " ".join(str(m) for m in messages) if isinstance(messages, list) else str(messages)
            parts.append(text if field == "non_field_errors" else f"{field}: {text}")
        return "; ".join(parts)
    return (f"HTTP {response.status_code} from {response.request.url}, which is not the leaderboard API's "
            "answer (is the server URL right?)")


class Client:
    """One site's API. ``token``: an API token (the site's *API tokens* page), None to read as a
    visitor. ``retries``: further tries after a retryable failure (so ``retries + 1`` in all);
    ``backoff_s`` doubles after each up to ``max_backoff_s``; ``max_wait_s``: the longest
    Retry-After waited for (seconds); ``sleep``: the waiting function (tests pass a recorder);
    ``on_retry``: told before each wait what failed and how long the wait is (the CLI prints it)."""

    def __init__(self, server: str, token: str | None = None, *, timeout_s: float = 60.0, retries: int = 5,
                 backoff_s: float = 1.0, max_backoff_s: float = 30.0, max_wait_s: float = 300.0,
                 sleep: Callable[[float], None] = time.sleep, transport: httpx.BaseTransport | None = None,
                 on_retry: Callable[[str], None] | None = None):
        server = server.strip().rstrip("/")
        if not server.startswith(("http://", "https://")):
            raise ValueError(f"the server must be an http:// or https:// URL, not {server!r}")
        self.server = server
        self.retries, self.backoff_s, self.max_backoff_s, self.max_wait_s = retries, backoff_s, max_backoff_s, max_wait_s
        self._sleep = sleep
        self._on_retry = on_retry
        headers = {"User-Agent": f"leaderboard-client/{__version__}", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Token {token}"
        self._http = httpx.Client(base_url=server + API_PREFIX, headers=headers, timeout=timeout_s,
                                  follow_redirects=False, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------
    def _request(self, what: str, send: Callable[[], httpx.Response], *, idempotent: bool) -> Any:
        """``send`` under the retry policy (module docstring); the answer's JSON, or ApiError."""

        def attempt() -> httpx.Response:
            response = send()
            asked = retry_after_s(response) if response.status_code in (429, 503) else None
            if asked is not None and asked > self.max_wait_s:
                raise ApiError(f"{api_message(response)} (the site asks to retry after {asked:.0f} s)",
                               response.status_code)
            if (asked is not None) or (idempotent and (response.status_code >= 500 or response.status_code == 429)):
                raise _TryAgain(api_message(response), response.status_code, asked)
            return response

        def wait(state: tenacity.RetryCallState) -> float:
            failure = state.outcome.exception() if state.outcome is not None else None
            asked = getattr(failure, "retry_after", None)
            return asked if asked is not None else backoff(state)

        def tell(state: tenacity.RetryCallState) -> None:
            failure = state.outcome.exception() if state.outcome is not None else None
            problem = str(failure) if isinstance(failure, _TryAgain) else f"{type(failure).__name__}: {failure}"
            if self._on_retry is not None:
                self._on_retry(f"{what}: {problem}; trying again in {state.upcoming_sleep:.0f} s "
                               f"({state.attempt_number} of {self.retries + 1} tries)")

        backoff = tenacity.wait_exponential(multiplier=self.backoff_s, max=self.max_backoff_s)
        transient: tuple[type[Exception], ...] = (
            (httpx.TransportError, _TryAgain) if idempotent else (httpx.ConnectError, httpx.ConnectTimeout, _TryAgain))
        retrying = tenacity.Retrying(retry=tenacity.retry_if_exception_type(transient),
                                     stop=tenacity.stop_after_attempt(self.retries + 1),
                                     wait=wait, sleep=self._sleep, before_sleep=tell, reraise=True)
        try:
            response = retrying(attempt)
        except _TryAgain as exc:
            raise ApiError(f"{exc} (HTTP {exc.status_code}, {self.retries + 1} tries)", exc.status_code) from exc
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ApiError(f"{what}: cannot reach {self.server}: {type(exc).__name__}: {exc}") from exc
        except httpx.TransportError as exc:
            maybe = "" if idempotent else (" - the site may have received it: look at its My submissions page "
                                           "before sending it again")
            raise ApiError(f"{what}: {type(exc).__name__} talking to {self.server}: {exc}{maybe}") from exc
        if response.status_code >= 400:
            raise ApiError(api_message(response), response.status_code)
        if response.is_redirect:  # not followed: the token would go wherever the site points
            where = response.headers.get("Location", "?")
            raise ApiError(f"{what}: {self.server} redirects to {where}; log in with the address it names "
                           "(leaderboard login --server https://…)", response.status_code)
        try:
            return response.json()
        except (ValueError, RecursionError) as exc:  # json raises RecursionError for deep nesting
            raise ApiError(f"{what}: {self.server} answered HTTP {response.status_code} but not in JSON "
                           "(is the server URL right?)", response.status_code) from exc

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET ``/api/v1/<path>``; its JSON answer."""
        return self._request(f"GET {path}", lambda: self._http.get(path, params=params), idempotent=True)

    # ------------------------------------------------------------------------------------------
    def benchmarks(self) -> list[dict[str, Any]]:
        return self.get("benchmarks/")

    def leaderboard(self, benchmark: str, *, task: str | None = None, limit: int = 50) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if task:
            params["task"] = task
        return self.get(f"benchmarks/{quote(benchmark, safe='')}/leaderboard/", params)

    def submission(self, submission_id: int) -> dict[str, Any]:
        """Submission ``submission_id`` as the API returns it; ApiError 404 names the number (it
        was deleted, is private to another account, or never existed)."""
        try:
            return self.get(f"submissions/{submission_id}/")
        except ApiError as exc:
            if exc.status_code == 404:
                raise ApiError(f"submission #{submission_id}: {exc} (deleted, private to another account, "
                               f"or not a submission of {self.server})", 404) from exc
            raise

    def my_submissions(self) -> list[dict[str, Any]]:
        """The token's owner's latest submissions (at most 100); refused without a valid token,
        which is how `leaderboard login` checks one."""
        return self.get("submissions/")

    def submit(self, *, benchmark: str, artifact: Path, name: str, hparams: dict[str, Any] | None = None,
               private: bool = False, description: str = "") -> dict[str, Any]:
        """Upload ``artifact``; the created submission as the API returns it (201), with
        ``warnings`` about tasks no runner can serve now. The file is read afresh on each try."""
        data = {"benchmark": benchmark, "name": name, "hparams": json.dumps(hparams or {}),
                "description": description, "visibility": "private" if private else "public"}

        def send() -> httpx.Response:
            with artifact.open("rb") as fh:
                return self._http.post("submissions/", data=data, files={"artifact": (artifact.name, fh)})

        return self._request(f"upload {artifact.name}", send, idempotent=False)
