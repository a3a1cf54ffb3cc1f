"""Telling a database outage from a bug, and waiting one out with a backoff.

A worker whose database is unreachable keeps its engine warm and its jobs running; it retries
with an exponential backoff (so a restarting server is not hammered), and its leases hand
its tasks back to the queue if the outage outlasts them."""

from __future__ import annotations

import time

from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

#: First wait after a failed database call, doubled after each further failure, up to the cap.
FIRST_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 5.0


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` means the database cannot be used right now (refused or lost
    connection, server shutting down, pool exhausted, SQLite busy) rather than a bug."""
    if isinstance(exc, DisconnectionError | PoolTimeout | OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


class Backoff:
    """When the next database call may be tried, after consecutive failures."""

    def __init__(self, first: float = FIRST_DELAY_SECONDS, cap: float = MAX_DELAY_SECONDS) -> None:
        self.first, self.cap = first, cap
        self.failures = 0
        self._until = 0.0

    def failed(self) -> float:
        """Record a failure; returns the seconds to wait before the next try."""
        delay = min(self.cap, self.first * 2**self.failures)
        self.failures += 1
        self._until = time.monotonic() + delay
        return delay

    def succeeded(self) -> None:
        self.failures, self._until = 0, 0.0

    @property
    def waiting(self) -> bool:
        """True until the delay of the last failure has passed."""
        return time.monotonic() < self._until


def brief(exc: BaseException) -> str:
    """The first line of an exception, for a log line that repeats during an outage."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
