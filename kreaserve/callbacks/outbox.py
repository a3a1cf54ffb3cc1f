"""The callback outbox over the database: enqueue with the task's end, claim, record.

A delivery row is written in the transaction that ends its task (so a crash can lose
no callback) and is attempted by one sender at a time: a claim takes a lock that expires,
so a sender that died mid-attempt hands its deliveries on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from kreaserve import contract
from kreaserve.db import Database
from kreaserve.db.models import CallbackAttempt, CallbackDelivery, Task

PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"


def webhook_id(task_id: str) -> str:
    """The `webhook-id` of a task's end: stable across retries and redeliveries."""
    return f"msg_{task_id}"


def enqueue(session: Session, task: Task) -> None:
    """Queue the delivery of a task's end (call inside the transaction that ends it)."""
    if not task.callback_url:
        return
    now = time.time()
    session.add(CallbackDelivery(
        task_id=task.id, account_id=task.account_id, url=task.callback_url,
        webhook_id=webhook_id(task.id), status=PENDING, attempts=0, next_attempt_at=now,
        created_at=now,
    ))


@dataclass(frozen=True)
class Due:
    """A claimed delivery, ready to attempt."""

    id: int
    task_id: str
    account_id: int
    url: str
    webhook_id: str
    attempts: int
    body: bytes | None


def claim_due(db: Database, sender: str, limit: int, lock_seconds: float) -> list[Due]:
    """Lock up to `limit` deliveries whose next attempt is due."""
    if limit <= 0:
        return []
    now = time.time()
    due = (
        select(CallbackDelivery.id)
        .where(CallbackDelivery.status == PENDING, CallbackDelivery.next_attempt_at <= now,
               (CallbackDelivery.locked_until.is_(None)) | (CallbackDelivery.locked_until < now))
        .order_by(CallbackDelivery.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    with db.transaction() as session:
        rows = session.execute(
            update(CallbackDelivery)
            .where(CallbackDelivery.id.in_(due.scalar_subquery()))
            .values(locked_by=sender, locked_until=now + lock_seconds)
            .returning(CallbackDelivery.id, CallbackDelivery.task_id,
                       CallbackDelivery.account_id, CallbackDelivery.url,
                       CallbackDelivery.webhook_id, CallbackDelivery.attempts,
                       CallbackDelivery.body)
        ).all()
    return [Due(*row) for row in rows]


def record_attempt(db: Database, due: Due, sender: str, *, body: bytes, started_at: float,
                   duration: float, status_code: int | None, error: str | None) -> str:
    """Store one attempt and schedule what follows; returns the delivery's new status."""
    number = due.attempts + 1
    succeeded = error is None and status_code is not None and 200 <= status_code < 300
    now = time.time()
    if succeeded:
        values: dict[str, object] = {"status": SUCCEEDED, "finished_at": now}
    elif number <= len(contract.CALLBACK_RETRY_DELAYS):
        values = {"status": PENDING,
                  "next_attempt_at": now + contract.CALLBACK_RETRY_DELAYS[number - 1]}
    else:
        values = {"status": FAILED, "finished_at": now}
    with db.transaction() as session:
        result = session.execute(
            update(CallbackDelivery)
            .where(CallbackDelivery.id == due.id, CallbackDelivery.locked_by == sender,
                   CallbackDelivery.attempts == due.attempts)
            .values(attempts=number, locked_by=None, locked_until=None, body=body, **values)
        )
        if result.rowcount != 1:  # our lock expired and another sender took over
            return "lost"
        session.add(CallbackAttempt(delivery_id=due.id, number=number, started_at=started_at,
                                    duration_seconds=duration, status_code=status_code,
                                    error=error))
    return str(values["status"])


def deliveries(db: Database, task_id: str
               ) -> list[tuple[CallbackDelivery, list[CallbackAttempt]]]:
    """A task's deliveries, oldest first, each with its attempts."""
    with db.transaction() as session:
        rows = list(session.execute(
            select(CallbackDelivery).where(CallbackDelivery.task_id == task_id)
            .order_by(CallbackDelivery.id)).scalars())
        attempts = list(session.execute(
            select(CallbackAttempt)
            .where(CallbackAttempt.delivery_id.in_([row.id for row in rows]))
            .order_by(CallbackAttempt.delivery_id, CallbackAttempt.number)).scalars())
    by_delivery: dict[int, list[CallbackAttempt]] = {row.id: [] for row in rows}
    for attempt in attempts:
        by_delivery[attempt.delivery_id].append(attempt)
    return [(row, by_delivery[row.id]) for row in rows]


def redeliver(db: Database, task: Task) -> None:
    """Queue a new delivery of an ended task's callback (same webhook-id, fresh attempts)."""
    with db.transaction() as session:
        enqueue(session, task)
