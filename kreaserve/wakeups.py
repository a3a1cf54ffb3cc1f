"""Process-local wake-ups, so that idle loops sleep long and still react at once.

An idle worker or callback sender waits on its own `Idle`; whoever commits new work in
this process (a created task, a queued callback) calls `notify(channel)`, which wakes
every waiter of that channel. Polling stays the fallback (work from other processes,
retries coming due): each empty poll doubles the wait up to a ceiling, and any claim or
wake-up resets it to the base interval. Without this, idle pollers cost ~4 % of a core.
"""

from __future__ import annotations

import threading
import time
import weakref

TASKS = "tasks"
CALLBACKS = "callbacks"

_lock = threading.Lock()
_waiters: dict[str, weakref.WeakSet[Idle]] = {}


def notify(channel: str) -> None:
    """Wake every waiter of `channel` in this process (call it after the commit)."""
    with _lock:
        waiters = list(_waiters.get(channel, ()))
    for waiter in waiters:
        waiter.wake()


class Idle:
    """One loop's idle wait on a channel: backoff from `base` up to `ceiling` seconds."""

    def __init__(self, channel: str, base: float, ceiling: float) -> None:
        self.base, self.ceiling = base, max(base, ceiling)
        self._delay = base
        self._event = threading.Event()
        with _lock:
            _waiters.setdefault(channel, weakref.WeakSet()).add(self)

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
        delay = self._delay
        if until is not None:
            delay = min(delay, max(self.base, until - time.time()))
        woken = self._event.wait(delay)
        self._event.clear()
        self._delay = self.base if woken else min(self._delay * 2, self.ceiling)
        return woken
