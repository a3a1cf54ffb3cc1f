"""Periodic upkeep any process may run: reclaim expired leases, delete expired results
and finished rate-limit windows.

Both jobs are idempotent, so several processes running them at once is harmless.
"""

from __future__ import annotations

import logging
import threading

from kreaserve import limits, queue
from kreaserve.config import Settings
from kreaserve.db import Database
from kreaserve.storage import Storage

log = logging.getLogger("kreaserve.maintenance")


def sweep_expired_results(db: Database, storage: Storage) -> int:
    """Delete the files of results whose URLs have expired; returns how many tasks."""
    swept = 0
    for task_id, keys in queue.expired_results(db):
        for key in keys:
            storage.delete(key)
        queue.mark_purged(db, task_id)
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
                recovered = queue.reap(self.db, self.settings.max_attempts)
                if recovered:
                    log.warning("recovered %d tasks whose worker stopped renewing", recovered)
                if since_sweep >= self.settings.sweep_interval_seconds:
                    sweep_expired_results(self.db, self.storage)
                    with self.db.transaction() as session:
                        limits.forget_old_windows(session)
                    since_sweep = 0.0
            except Exception:  # noqa: BLE001 - upkeep must outlive database hiccups
                log.exception("maintenance pass failed")
            if self._stop.wait(reap_every):
                return
            since_sweep += reap_every
