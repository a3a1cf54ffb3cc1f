"""What the sync and async clients share: the retry policy, request bodies, answer parsing
and the polling decisions (the events stream's resume decisions are in `_events`). The
clients themselves only do the I/O, so they cannot drift apart.

The retry loop is written here rather than taken from a library (tenacity, httpx-retries)
because it must treat one answer three ways at once: retry 429/503 after the server's own
Retry-After, give up when that wait exceeds a bound, and never resend a create whose
request may have reached the server unless it carries an Idempotency-Key (see
`retryable_exception`).
"""

from __future__ import annotations

import email.utils
import math
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from kreaserve.client.errors import KreaserveError
from kreaserve.client.models import Task

DEFAULT_MODEL = "krea-2-turbo"
#: Errors raised before a request left this machine: resending cannot create a task twice.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
#: Errors after which a GET (which changes nothing) is safe to resend.
_TRANSIENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


@dataclass(frozen=True)
class Retry:
    """How a client retries: up to `retries` more tries after connection errors and the
    `statuses` answers, waiting the server's Retry-After when given, else an exponential
    backoff with jitter (`backoff` × 2^n, at most `max_backoff`). A Retry-After longer
    than `max_retry_after` is not waited out: the error is raised at once, carrying it."""

    retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_retry_after: float = 60.0
    statuses: frozenset[int] = frozenset({429, 503})

    def backoff_delay(self, retry_number: int) -> float:
        """Seconds before retry `retry_number` (0-based): half fixed, half random."""
        ceiling = min(self.max_backoff, self.backoff * 2**retry_number)
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def delay_after(self, retry_number: int, response: httpx.Response) -> float | None:
        """Seconds to wait before retrying after this answer, or None: do not retry."""
        if response.status_code not in self.statuses or retry_number >= self.retries:
            return None
        after = retry_after_seconds(response)
        if after is None:
            return self.backoff_delay(retry_number)
        return after if after <= self.max_retry_after else None

    def delay_after_error(
        self, retry_number: int, method: str, exc: Exception, kwargs: dict[str, Any]
    ) -> float | None:
        """Seconds to wait before resending after a network error, or None: raise it."""
        idempotent = has_idempotency_key(kwargs)
        if not retryable_exception(method, exc, idempotent) or retry_number >= self.retries:
            return None
        return self.backoff_delay(retry_number)


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds (delta-seconds or an HTTP date), or None."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment is None or moment.tzinfo is None:
            return None
        seconds = moment.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def retryable_exception(method: str, exc: Exception, idempotent: bool = False) -> bool:
    """A GET, or a request with an Idempotency-Key (a create: the server answers a resent
    one with the task the first made, charged once), is resent after any transient
    network error; another POST only when it surely never reached the server."""
    if method.upper() == "GET" or idempotent:
        return isinstance(exc, _TRANSIENT)
    return isinstance(exc, _NOT_SENT)


def has_idempotency_key(kwargs: dict[str, Any]) -> bool:
    """Whether a request's keyword arguments carry an Idempotency-Key header."""
    headers = kwargs.get("headers") or {}
    return any(name.lower() == "idempotency-key" for name in headers)


def new_idempotency_key() -> str:
    return f"kreaserve-sdk-{uuid.uuid4()}"


def create_body(
    prompt: str,
    *,
    model: str,
    size: str | None,
    quality: str | None,
    seed: int | None,
    nsfw_check: bool | None,
    callback_url: str | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The create request, with only the fields given (the server applies its defaults)."""
    body: dict[str, Any] = {"model": model, "prompt": prompt}
    optional = {
        "size": size,
        "quality": quality,
        "seed": seed,
        "nsfw_check": nsfw_check,
        "callback_url": callback_url,
    }
    body.update({name: value for name, value in optional.items() if value is not None})
    body.update(extra)
    return body


def list_params(limit: int | None, status: str | None, cursor: str | None) -> dict[str, Any]:
    params = {"limit": limit, "status": status, "cursor": cursor}
    return {name: value for name, value in params.items() if value is not None}


def error_from(response: httpx.Response) -> KreaserveError:
    """The error answer as a KreaserveError (also for a non-JSON answer, e.g. a proxy's)."""
    after = retry_after_seconds(response)
    try:
        error = response.json()["error"]
        code, message = str(error.get("code", "")), str(error.get("message", ""))
        type_, param = str(error.get("type", "")), error.get("param")
    except (ValueError, KeyError, TypeError, AttributeError):
        return KreaserveError(
            response.status_code, "http_error", response.text[:200], retry_after=after
        )
    return KreaserveError(response.status_code, code, message, type_, param, after)


def json_of(response: httpx.Response) -> Any:
    """The JSON of a 2xx answer; raises KreaserveError for any other."""
    if not response.is_success:
        raise error_from(response)
    return response.json()


@dataclass
class PollRhythm:
    """Seconds between polls: `base` after every change, then ×1.5 per unchanged answer up
    to `ceiling`, so a running task is watched closely and a long queue is not hammered."""

    base: float
    ceiling: float
    _current: float = 0.0
    _last: tuple[str, int] | None = None

    def next_delay(self, status: str, progress: int) -> float:
        if (status, progress) != self._last:
            self._last, self._current = (status, progress), self.base
        else:
            self._current = min(self.ceiling, self._current * 1.5)
        return self._current


class PollIntervals(Protocol):
    """A client's polling settings."""

    poll_interval: float
    max_poll_interval: float


class Polling:
    """The decisions of polling a task until it ends: which answers to yield (a change of
    status or progress), how long to wait (PollRhythm) and when the deadline has come.

    The call's `poll_interval`, else the client's, is the base; the ceiling is the larger
    of it and the client's `max_poll_interval`. `task` is the last one yielded."""

    def __init__(
        self,
        client: PollIntervals,
        task: Task,
        *,
        deadline: float,
        timeout: float,
        poll_interval: float | None,
    ) -> None:
        self.task_id, self.deadline, self.timeout = task.id, deadline, timeout
        self.last: tuple[str, int] = (task.status, task.progress)
        self._rhythm = PollRhythm(
            poll_interval or client.poll_interval,
            max(poll_interval or 0, client.max_poll_interval),
        )

    def changed(self, task: Task) -> bool:
        """Whether this answer differs from the last one yielded (and remember it)."""
        if (task.status, task.progress) == self.last:
            return False
        self.last = (task.status, task.progress)
        return True

    def delay(self, task: Task) -> float:
        """Seconds until the next poll; raises TimeoutError when it would pass the deadline."""
        delay = self._rhythm.next_delay(task.status, task.progress)
        if time.monotonic() + delay > self.deadline:
            raise TimeoutError(f"task {self.task_id} did not end within {self.timeout} s")
        return delay
