"""The registry of workers: each records its engine's state in a heartbeat; a worker whose
heartbeat is older than `WORKER_STALE_SECONDS` counts as gone."""

from __future__ import annotations

import time

from sqlalchemy import select

from kreaserve.db import Database
from kreaserve.db.models import WorkerRecord

#: A worker that has not renewed its heartbeat for this long counts as gone.
WORKER_STALE_SECONDS = 30.0


def worker_heartbeat(
    db: Database,
    worker_id: str,
    hostname: str,
    pid: int,
    state: str,
    weights: str | None = None,
    device: str | None = None,
    warning: str | None = None,
    message: str | None = None,
) -> None:
    """Record (insert or update) a worker and the state of its engine."""
    now = time.time()
    with db.transaction() as session:
        row = session.get(WorkerRecord, worker_id)
        if row is None:
            session.add(
                WorkerRecord(
                    id=worker_id,
                    hostname=hostname,
                    pid=pid,
                    state=state,
                    weights=weights,
                    device=device,
                    warning=warning,
                    message=message,
                    started_at=now,
                    heartbeat_at=now,
                )
            )
        else:
            row.state, row.heartbeat_at = state, now
            if weights is not None:
                row.weights = weights
            if device is not None:
                row.device = device
            if warning is not None:
                row.warning = warning
            if message is not None:
                row.message = message


def live_workers(db: Database) -> list[WorkerRecord]:
    """Workers whose heartbeat is recent."""
    with db.read() as session:
        return list(
            session.execute(
                select(WorkerRecord)
                .where(WorkerRecord.heartbeat_at > time.time() - WORKER_STALE_SECONDS)
                .order_by(WorkerRecord.started_at)
            ).scalars()
        )
