"""PostgreSQL LISTEN/NOTIFY feeding this process's wake-ups (`kreaserve.wakeups`).

Tasks and callback deliveries are added by other processes too (API replicas, the
workers), which in-process wake-ups do not reach; migration 0011's triggers NOTIFY on
their commits, and one daemon thread per process and database LISTENs on a dedicated
autocommit connection, so idle waiters can back off to their ceiling and still wake at
once. While that connection is down the waiters keep their base interval
(`wakeups.set_remote`); the thread reconnects with a backoff, logs one line per outage
and never stops the worker.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import psycopg
from psycopg.conninfo import make_conninfo

from kreaserve import wakeups

if TYPE_CHECKING:
    from kreaserve.db.session import Database

log = logging.getLogger("kreaserve.db")

#: PostgreSQL channel -> in-process wake-up channel (the names migration 0011 notifies).
CHANNELS = {"kreaserve_tasks": wakeups.TASKS, "kreaserve_callbacks": wakeups.CALLBACKS}
#: How often the thread looks at its stop flag while no notification comes (seconds).
STOP_CHECK_SECONDS = 0.5
#: Reconnection backoff (seconds): doubles from the first to the last.
RETRY_SECONDS = (0.5, 10.0)
#: TCP keepalives, so that a connection lost without a FIN is noticed in about a minute.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}

_lock = threading.Lock()
_listeners: dict[str, tuple[Listener, set[int]]] = {}


def source(db: Database) -> str | None:
    """The key that waiters and the listener of one database share: its conninfo; None on
    SQLite, whose writers share one process and its in-process wake-ups."""
    if not db.is_postgres:
        return None
    return db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def acquire(key: str | None, owner: object) -> None:
    """`owner` (a worker, a callback sender) needs the listener of `key` (a `source`):
    started by the first owner, shared by the others. None (SQLite) does nothing."""
    if key is None:
        return
    with _lock:
        listener, owners = _listeners.get(key, (None, set()))
        if listener is None:
            listener = Listener(key)
            listener.start()
        owners.add(id(owner))
        _listeners[key] = (listener, owners)


def release(key: str | None, owner: object) -> None:
    """`owner` is done (once or again: idempotent); the last one stops the thread,
    within `STOP_CHECK_SECONDS`."""
    with _lock:
        listener, owners = _listeners.get(key or "", (None, set()))
        owners.discard(id(owner))
        if listener is None or owners:
            return
        del _listeners[key or ""]
    listener.stop()


class Listener:
    """One thread that LISTENs on the wake-up channels and relays them to waiters."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kreaserve-listen", daemon=True)
        self.connected = threading.Event()
        self._outage = False  # logged once per outage, not per retry

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        delay = RETRY_SECONDS[0]
        while not self._stop.is_set():
            try:
                self._listen()
            except Exception as error:  # noqa: BLE001 - any failure: reconnect, never die
                if self.connected.is_set():
                    delay = RETRY_SECONDS[0]  # it had worked: a fresh outage
                self._down()
                if not self._outage:
                    log.warning(
                        "wake-up listener has no database connection (%s: %s); waiters "
                        "poll at their base interval until it is back",
                        type(error).__name__,
                        (str(error).strip().splitlines() or [""])[0],
                    )
                    self._outage = True
                self._stop.wait(delay)
                delay = min(delay * 2, RETRY_SECONDS[1])
                continue
            break  # _listen returns only when stopped
        self._down()

    def _down(self) -> None:
        if self.connected.is_set():
            self.connected.clear()
            wakeups.set_remote(self.conninfo, False)

    def _listen(self) -> None:
        conninfo = make_conninfo(self.conninfo, connect_timeout=10, **KEEPALIVES)
        with psycopg.Connection.connect(conninfo, autocommit=True) as connection:
            for channel in CHANNELS:
                connection.execute(f"LISTEN {channel}")
            if self._outage:
                log.info("wake-up listener reconnected")
                self._outage = False
            self.connected.set()
            wakeups.set_remote(self.conninfo, True)  # also wakes all: some may be missed
            while not self._stop.is_set():
                for notice in connection.notifies(timeout=STOP_CHECK_SECONDS):
                    local = CHANNELS.get(notice.channel)
                    if local is not None:
                        wakeups.notify(local)
