"""The terminal transitions of a held task (completed, failed, cancelled), each with its
billing (charge or release) and its callback in the same transaction."""

from __future__ import annotations

import time

from sqlalchemy import update
from sqlalchemy.orm import Session

from kreaserve import contract, ledger, metrics, wakeups
from kreaserve.callbacks import outbox
from kreaserve.db import Database
from kreaserve.db.models import Task
from kreaserve.states import BillingState

#: The error of a task its owner cancelled (the contract's `request_cancelled`).
CANCELLED_ERROR = {"error_code": "request_cancelled", "error_message": "Cancelled by the client."}


def end(
    session: Session, task_id: str, worker_id: str | None, status: str, **values: object
) -> Task | None:
    """Move a held task to a terminal state and queue its callback, in the caller's
    transaction; None when it is no longer ours."""
    guard = [Task.id == task_id, Task.status == contract.PROCESSING]
    if worker_id is not None:
        guard.append(Task.worker_id == worker_id)
    task = session.execute(
        update(Task)
        .where(*guard)
        .values(status=status, finished_at=time.time(), lease_expires_at=None, **values)
        .returning(Task)
    ).scalar_one_or_none()
    if task is not None:
        outbox.enqueue(session, task)
    return task


def complete(
    db: Database,
    task_id: str,
    worker_id: str,
    result_keys: list[str],
    ttl_seconds: float,
    engine_seconds: float,
    batch: int | None = None,
) -> bool:
    """Mark completed and charge the reservation (billing confirmation), atomically.
    `batch`: how many images ran in its pipeline call (a metrics label)."""
    now = time.time()
    with db.transaction() as session:
        task = end(
            session,
            task_id,
            worker_id,
            contract.COMPLETED,
            progress=100,
            result_keys=result_keys,
            results_expire_at=now + ttl_seconds,
            engine_seconds=engine_seconds,
            billing_state=BillingState.CHARGED,
        )
        if task is None:
            return False
        ledger.charge(session, task.account_id, task.price_units, task.id)
    _ended(task)
    metrics.task_ended(task, batch=batch)
    return True


def fail(
    db: Database,
    task_id: str,
    worker_id: str | None,
    code: str,
    message: str,
    status: str = contract.FAILED,
) -> bool:
    """Mark failed (or cancelled) with a task error code and release the reservation."""
    assert code in contract.TASK_ERROR_CODES, code
    with db.transaction() as session:
        task = end(
            session,
            task_id,
            worker_id,
            status,
            error_code=code,
            error_message=message,
            billing_state=BillingState.RELEASED,
        )
        if task is None:
            return False
        ledger.release(session, task.account_id, task.price_units, task.id)
    _ended(task)
    metrics.task_ended(task)
    return True


def end_cancelled(db: Database, task_id: str, worker_id: str) -> bool:
    """End a held task as cancelled by its owner, releasing its reservation."""
    return fail(
        db,
        task_id,
        worker_id,
        CANCELLED_ERROR["error_code"],
        CANCELLED_ERROR["error_message"],
        status=contract.CANCELLED,
    )


def _ended(task: Task) -> None:
    """After the commit: wake this process's callback sender if `end` queued a delivery."""
    if task.callback_url:
        wakeups.notify(wakeups.CALLBACKS)
