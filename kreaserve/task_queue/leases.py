"""The transitions of a task under a worker's lease: claim it (alone or in a batch of one
pixel size), renew the lease, hand it back; and the reaper of leases that ran out."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import func, select, true, update

from kreaserve import contract, images, ledger, metrics, phases
from kreaserve.db import Database
from kreaserve.db.models import Task
from kreaserve.db.rows import changed_rows
from kreaserve.states import BillingState
from kreaserve.task_queue.endings import CANCELLED_ERROR, end


@dataclass(frozen=True)
class Claim:
    """What a worker needs to run a claimed task."""

    task_id: str
    prompt: str
    width: int
    height: int
    seed: int
    quality: str
    attempts: int
    nsfw_check: bool = False
    created_at: float = 0.0
    batch: int = 1  # how many tasks were claimed together with it (itself included)
    output_format: str = images.DEFAULT_FORMAT
    output_quality: int = images.DEFAULT_QUALITY


def claim(db: Database, worker_id: str, lease_seconds: float) -> Claim | None:
    """Take the oldest pending task, or None when the queue is empty."""
    now = time.time()
    oldest = (
        select(Task.id)
        .where(Task.status == contract.PENDING)
        .order_by(Task.created_at, Task.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    with db.transaction() as session:
        row = session.execute(
            _claiming_update(Task.id == oldest, worker_id, lease_seconds, now)
        ).one_or_none()
    return None if row is None else _claim_from(row)


def _claiming_update(which: Any, worker_id: str, lease_seconds: float, now: float) -> Any:
    """The one claiming statement: move the pending tasks `which` selects to processing
    under `worker_id`'s lease, returning what the worker needs (see `_claim_from`)."""
    return (
        update(Task)
        .where(which, Task.status == contract.PENDING)
        .values(
            status=contract.PROCESSING,
            worker_id=worker_id,
            lease_expires_at=now + lease_seconds,
            attempts=Task.attempts + 1,
            started_at=func.coalesce(Task.started_at, now),
            progress=0,
            phase=phases.ENCODING,
        )
        .returning(
            Task.id,
            Task.prompt,
            Task.width,
            Task.height,
            Task.seed,
            Task.quality,
            Task.attempts,
            Task.nsfw_check,
            Task.created_at,
            Task.output_format,
            Task.output_quality,
        )
    )


def _claim_from(row: Any) -> Claim:
    """The Claim of a row returned by a claiming UPDATE."""
    return Claim(
        task_id=row.id,
        prompt=row.prompt,
        width=row.width,
        height=row.height,
        seed=row.seed,
        quality=row.quality,
        attempts=row.attempts,
        nsfw_check=bool(row.nsfw_check),
        created_at=row.created_at,
        output_format=row.output_format,
        output_quality=row.output_quality,
    )


def claim_same_size(
    db: Database, worker_id: str, lease_seconds: float, width: int, height: int, limit: int
) -> list[Claim]:
    """Take up to `limit` more pending tasks of `width` x `height`, oldest first, to run in
    one batch. Only first attempts: a task whose engine failed runs alone, so a task that
    kills engines cannot take a batch of others down with it twice."""
    if limit <= 0:
        return []
    now = time.time()
    oldest = (
        select(Task.id)
        .where(
            Task.status == contract.PENDING,
            Task.width == width,
            Task.height == height,
            Task.attempts == 0,
        )
        .order_by(Task.created_at, Task.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    with db.transaction() as session:
        # Two statements: PostgreSQL may run an `IN (... LIMIT n SKIP LOCKED)` subquery more
        # than once inside an UPDATE and so take more than n rows.
        ids = list(session.execute(oldest).scalars())
        if not ids:
            return []
        rows = session.execute(
            _claiming_update(Task.id.in_(ids), worker_id, lease_seconds, now)
        ).all()
    rows = sorted(rows, key=lambda row: (row.created_at, row.id))
    return [_claim_from(row) for row in rows]


def claim_batch(db: Database, worker_id: str, lease_seconds: float, max_size: int) -> list[Claim]:
    """The oldest pending task and up to `max_size - 1` more of its pixel size (see
    `claim_same_size`); empty when the queue is."""
    first = claim(db, worker_id, lease_seconds)
    if first is None:
        return []
    claims = [first]
    if max_size > 1 and first.attempts <= 1:
        claims += claim_same_size(
            db, worker_id, lease_seconds, first.width, first.height, max_size - 1
        )
    if len(claims) > 1:
        claims = [replace(claim, batch=len(claims)) for claim in claims]
    metrics.tasks_claimed(claims)
    return claims


@dataclass(frozen=True)
class LeaseState:
    """Answer to a renewal: do we still hold the task, and does its owner want it stopped?"""

    held: bool
    cancel_requested: bool


def renew(
    db: Database,
    task_id: str,
    worker_id: str,
    lease_seconds: float,
    progress: int | None = None,
    phase: str | None = None,
) -> LeaseState:
    """Extend the lease (and record progress and phase, see `kreaserve.phases`); tells
    the worker about cancellation."""
    values: dict[str, object] = {"lease_expires_at": time.time() + lease_seconds}
    if progress is not None:
        values["progress"] = progress
    if phase is not None:
        values["phase"] = phase
    with db.transaction() as session:
        row = session.execute(
            update(Task)
            .where(
                Task.id == task_id, Task.worker_id == worker_id, Task.status == contract.PROCESSING
            )
            .values(**values)
            .returning(Task.cancel_requested)
        ).one_or_none()
    if row is None:
        return LeaseState(held=False, cancel_requested=False)
    return LeaseState(held=True, cancel_requested=bool(row.cancel_requested))


def requeue(db: Database, task_id: str, worker_id: str) -> bool:
    """Hand a held task back to the queue (its worker is stopping or its engine died)."""
    with db.transaction() as session:
        result = session.execute(_back_to_pending(Task.worker_id == worker_id, task_id))
    return changed_rows(result) == 1


def _back_to_pending(holder: Any, task_id: str) -> Any:
    """The one requeueing statement: the processing task `task_id`, if `holder` (a
    condition on who holds it) is true, goes back to pending with no lease."""
    return (
        update(Task)
        .where(Task.id == task_id, holder, Task.status == contract.PROCESSING)
        .values(
            status=contract.PENDING, worker_id=None, lease_expires_at=None, progress=0, phase=None
        )
    )


def reap(db: Database, max_attempts: int) -> int:
    """Put tasks with an expired lease back in the queue (or fail them after max_attempts).

    Returns how many tasks were recovered or failed.
    """
    now = time.time()
    ended = []
    with db.transaction() as session:
        expired = session.execute(
            select(Task.id, Task.attempts, Task.cancel_requested)
            .where(Task.status == contract.PROCESSING, Task.lease_expires_at < now)
            .with_for_update(skip_locked=True)
        ).all()
        for row in expired:
            if row.cancel_requested:
                task = end(
                    session,
                    row.id,
                    None,
                    contract.CANCELLED,
                    **CANCELLED_ERROR,
                    billing_state=BillingState.RELEASED,
                )
            elif row.attempts >= max_attempts:
                task = end(
                    session,
                    row.id,
                    None,
                    contract.FAILED,
                    error_code="service_error",
                    error_message=f"The worker stopped {row.attempts} times while "
                    "running this task; it was given up.",
                    billing_state=BillingState.RELEASED,
                )
            else:
                session.execute(_back_to_pending(true(), row.id))
                continue
            if task is not None:
                ledger.release(session, task.account_id, task.price_units, task.id)
                ended.append(task)
    for task in ended:
        metrics.task_ended(task)
    return len(expired)
