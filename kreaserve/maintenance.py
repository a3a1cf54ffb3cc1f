"""Periodic upkeep any process may run: reclaim expired leases, delete expired results,
finished rate-limit windows and idempotency keys past their day.

Both jobs are idempotent, so several processes running them at once is harmless.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import select, update

from kreaserve import idempotency, limits, task_queue
from kreaserve.config import Settings
from kreaserve.db import Database
from kreaserve.db.models import Task
from kreaserve.storage import Storage

log = logging.getLogger("kreaserve.maintenance")


def expired_results(db: Database, limit: int = 500) -> list[tuple[str, list[str]]]:
    """Completed tasks whose result URLs have expired but whose files still exist."""
    with db.transaction() as session:
        rows = session.execute(
            select(Task.id, Task.result_keys)
            .where(Task.results_expire_at < time.time(), Task.results_purged.is_(False))
            .limit(limit)
        ).all()
    return [(row.id, list(row.result_keys or [])) for row in rows]


def mark_purged(db: Database, task_id: str) -> None:
    """Record that a task's result files are gone."""
    with db.transaction() as session:
        session.execute(update(Task).where(Task.id == task_id).values(results_purged=True))


def sweep_expired_results(db: Database, storage: Storage) -> int:
    """Delete the files of results whose URLs have expired; returns how many tasks."""
    swept = 0
    for task_id, keys in expired_results(db):
        for key in keys:
            storage.delete(key)
        mark_purged(db, task_id)
        swept += 1
    if swept:
        log.info("deleted the expired results of %d tasks", swept)
    return swept


class Maintenance:
    """A background thread: reap every few seconds, sweep every sweep_interval_seconds."""

    def __init__(self, settings: Settings, db: Database, storage: Storage) -> None:
        self.settings, self.db, self.storage = settings, db, storage
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, name="kreaserve-maintenance", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        reap_every = max(0.5, min(5.0, self.settings.lease_seconds / 3))
        since_sweep = float("inf")
        while True:
            try:
                recovered = task_queue.reap(self.db, self.settings.max_attempts)
                if recovered:
                    log.warning("recovered %d tasks whose worker stopped renewing", recovered)
                if since_sweep >= self.settings.sweep_interval_seconds:
                    sweep_expired_results(self.db, self.storage)
                    with self.db.transaction() as session:
                        limits.forget_old_windows(session)
                        idempotency.purge_expired(session)
                    since_sweep = 0.0
            except Exception:  # noqa: BLE001 - upkeep must outlive database hiccups
                log.exception("maintenance pass failed")
            if self._stop.wait(reap_every):
                return
            since_sweep += reap_every
