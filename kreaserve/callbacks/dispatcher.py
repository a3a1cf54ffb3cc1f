"""The callback sender: claims due deliveries from the outbox and POSTs them, signed.

Runs in `kreaserve serve` processes (they know the public URL and the URL-signing key
that the body's result URLs need). Each attempt goes through the SSRF guard, which
resolves the host, refuses internal addresses and connects to the address it checked.
Attempts run on a small thread pool so that one receiver that hangs for its full
10 seconds does not hold back the others.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import select

from kreaserve import accounts, contract, metrics, presenters, tracing, wakeups
from kreaserve.callbacks import outbox
from kreaserve.config import Settings
from kreaserve.db import Database, pg_listen
from kreaserve.db.models import Task
from kreaserve.outbound import pinned, signing, ssrf
from kreaserve.storage import ResultLinks

log = logging.getLogger("kreaserve.callbacks")

USER_AGENT = "kreaserve-callbacks/0.1"
#: A sender that died mid-attempt releases its deliveries after this long.
LOCK_SECONDS = contract.CALLBACK_TIMEOUT + 50.0


class CallbackDispatcher:
    """Background sender of the callback outbox."""

    def __init__(
        self, settings: Settings, db: Database, links: ResultLinks, *, poll_seconds: float = 0.1
    ) -> None:
        self.settings, self.db, self.links = settings, db, links
        self.id = f"{socket.gethostname()}-{os.getpid()}-callbacks-{uuid.uuid4().hex[:6]}"
        self.allow_hosts = settings.callback_allow_host_set
        self._concurrency, self._poll = settings.callback_concurrency, poll_seconds
        self._per_account = settings.callback_account_concurrency
        self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="kreaserve-callback")
        self._busy = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # PostgreSQL: deliveries come from other processes too, and wake it through LISTEN.
        ceiling = settings.worker_idle_poll_max_seconds
        remote = pg_listen.source(db)
        self._idle = wakeups.Idle(wakeups.CALLBACKS, poll_seconds, ceiling, remote=remote)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        pg_listen.acquire(self._idle.remote, self)
        self._thread = threading.Thread(target=self._loop, name="kreaserve-callbacks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._idle.wake()
        if self._thread:
            self._thread.join(timeout=5)
        pg_listen.release(self._idle.remote, self)
        # Attempts under way finish (at most the 10 s timeout); the rest wait in the outbox.
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                free = self._concurrency - self._busy
            try:
                due = outbox.claim_due(
                    self.db, self.id, free, LOCK_SECONDS, per_account=self._per_account
                )
            except Exception:  # noqa: BLE001 - keep sending through database hiccups
                log.exception("claiming callbacks failed")
                due = []
            for delivery in due:
                with self._lock:
                    self._busy += 1
                self._pool.submit(self._attempt_and_release, delivery)
            if due:
                self._idle.reset()
            else:
                # Where the wait does not grow (PostgreSQL while its LISTEN connection is
                # down), the next poll comes as soon as a retry could: no read needed.
                backs_off = self._idle.ceiling > self._idle.base
                self._idle.wait(until=self._next_due() if backs_off else None)

    def _next_due(self) -> float | None:
        try:
            return outbox.next_due(self.db)
        except Exception:  # noqa: BLE001 - the next claim reports the database's trouble
            return None

    def _attempt_and_release(self, delivery: outbox.Due) -> None:
        try:
            self.attempt(delivery)
        except Exception:  # noqa: BLE001 - the lock expires and another pass retries
            log.exception("callback %s of task %s crashed", delivery.id, delivery.task_id)
        finally:
            with self._lock:
                self._busy -= 1
            self._idle.wake()  # a retry may now be due sooner, and a slot is free

    def render(self, task_id: str) -> bytes:
        """The task's query body, exactly the bytes GET /v1/tasks/{id} answers."""
        with self.db.transaction() as session:
            task = session.get(Task, task_id)
            assert task is not None and task.status in contract.TERMINAL
            body = presenters.task_object(task, links=self.links, estimated_time=None)
        return presenters.render_json(body)

    def attempt(self, delivery: outbox.Due) -> str:
        """One signed POST of a delivery; records it and returns the delivery's status."""
        body = delivery.body or self.render(delivery.task_id)
        with self.db.transaction() as session:
            secret = accounts.webhook_secret(session, delivery.account_id)
            traceparent = session.scalar(
                select(Task.traceparent).where(Task.id == delivery.task_id)
            )
        started = time.time()
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            **signing.signed_headers(secret, delivery.webhook_id, body, started),
        }
        clock = time.perf_counter()
        with tracing.span(
            "callback",
            traceparent,
            kind="client",
            attributes={"kreaserve.task_id": delivery.task_id},
        ):
            if traceparent:  # the callback continues the create request's trace
                headers["traceparent"] = tracing.outgoing(traceparent)
            status_code, error = self._post(delivery.url, body, headers)
        duration = time.perf_counter() - clock
        status = outbox.record_attempt(
            self.db,
            delivery,
            self.id,
            body=body,
            started_at=started,
            duration=duration,
            status_code=status_code,
            error=error,
        )
        metrics.callback_attempt(error, status_code, delivery.attempts + 1)
        log.info(
            "callback of task %s attempt %d: %s (%s, %.2f s)",
            delivery.task_id,
            delivery.attempts + 1,
            status,
            error or status_code,
            duration,
        )
        return status

    def _post(
        self, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int | None, str | None]:
        """(HTTP status, error text) of one POST; error None on a 2xx answer."""
        try:
            response = pinned.post_pinned(
                url, body, headers, timeout=contract.CALLBACK_TIMEOUT, allow_hosts=self.allow_hosts
            )
        except ssrf.UnsafeURLError as exc:
            return None, f"refused: {exc}"
        except httpx.TimeoutException:
            return None, f"timed out after {contract.CALLBACK_TIMEOUT:.0f} s"
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500]
        status_code = response.status_code
        return status_code, None if 200 <= status_code < 300 else f"HTTP {status_code}"
