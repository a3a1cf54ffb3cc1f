"""Process-local wake-ups, so that idle loops sleep long and still react at once.

An idle worker or callback sender waits on its own `Idle`; whoever commits new work in
this process (a created task, a queued callback) calls `notify(channel)`, which wakes
every waiter of that channel. Polling stays the fallback (work from other processes,
retries coming due): each empty poll doubles the wait up to a ceiling, and any claim or
wake-up resets it to the base interval. Without this, idle pollers cost ~4 % of a core.

Work committed by other processes (PostgreSQL: API replicas, separate workers) reaches
the waiters through a listener (`kreaserve.db.pg_listen`) that calls `notify` too. A
waiter that depends on one (`Idle(remote=...)`) keeps the base interval while that
listener is not connected (`set_remote`), so no wake-up can be missed for long.
"""

from __future__ import annotations

import threading
import time
import weakref

TASKS = "tasks"
CALLBACKS = "callbacks"

_lock = threading.Lock()
_waiters: dict[str, weakref.WeakSet[Idle]] = {}
_connected: set[str] = set()


def notify(channel: str) -> None:
    """Wake every waiter of `channel` in this process (call it after the commit)."""
    with _lock:
        waiters = list(_waiters.get(channel, ()))
    for waiter in waiters:
        waiter.wake()


def set_remote(source: str, connected: bool) -> None:
    """The listener of `source` is (or is no longer) connected. Either way every waiter
    is woken: wake-ups sent while it was down are lost, and a waiter that depends on it
    must not sleep out a long wait."""
    with _lock:
        if connected:
            _connected.add(source)
        else:
            _connected.discard(source)
        waiters = [waiter for channel in _waiters.values() for waiter in channel]
    for waiter in waiters:
        if waiter.remote == source:
            waiter.wake()


class Idle:
    """One loop's idle wait on a channel: backoff from `base` up to `ceiling` seconds.

    With `remote`, work also comes from other processes through that source's listener:
    the ceiling applies only while it is connected, else the wait stays at the base."""

    def __init__(
        self, channel: str, base: float, ceiling: float, remote: str | None = None
    ) -> None:
        self.base, self._ceiling, self.remote = base, max(base, ceiling), remote
        self._delay = base
        self._event = threading.Event()
        with _lock:
            _waiters.setdefault(channel, weakref.WeakSet()).add(self)

    @property
    def ceiling(self) -> float:
        """The longest wait now: the base while a needed listener is not connected."""
        if self.remote is None or self.remote in _connected:
            return self._ceiling
        return self.base

    def wake(self) -> None:
        """End the current (or next) wait early; stop() calls it too."""
        self._event.set()

    def reset(self) -> None:
        """Work was found: the next idle wait is the base interval again."""
        self._delay = self.base

    def wait(self, until: float | None = None) -> bool:
        """Sleep after an empty poll, True when woken: no later than the time.time()
        `until` but at least the base interval (work that is due but not claimable must
        not make a busy loop)."""
        ceiling = self.ceiling
        delay = current = min(self._delay, ceiling)
        if until is not None:
            delay = min(delay, max(self.base, until - time.time()))
        woken = self._event.wait(delay)
        self._event.clear()
        self._delay = self.base if woken else min(current * 2, ceiling)
        return woken
