"""The callback outbox over the database: enqueue with the task's end, claim, record.

A delivery row is written in the transaction that ends its task (so a crash can lose
no callback) and is attempted by one sender at a time: a claim takes a lock that expires,
so a sender that died mid-attempt hands its deliveries on.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from sqlalchemy import bindparam, exists, func, select, update
from sqlalchemy.orm import Session, aliased

from kreaserve import contract, wakeups
from kreaserve.db import Database
from kreaserve.db.models import CallbackAttempt, CallbackDelivery, Task
from kreaserve.db.rows import changed_rows
from kreaserve.states import DeliveryState


def webhook_id(task_id: str) -> str:
    """The `webhook-id` of a task's end: stable across retries and redeliveries."""
    return f"msg_{task_id}"


def enqueue(session: Session, task: Task) -> None:
    """Queue the delivery of a task's end (call inside the transaction that ends it)."""
    if not task.callback_url:
        return
    now = time.time()
    session.add(
        CallbackDelivery(
            task_id=task.id,
            account_id=task.account_id,
            url=task.callback_url,
            webhook_id=webhook_id(task.id),
            status=DeliveryState.PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )


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


def claim_due(
    db: Database, sender: str, limit: int, lock_seconds: float, per_account: int | None = None
) -> list[Due]:
    """Lock up to `limit` deliveries whose next attempt is due, fairly across accounts.

    Each account's oldest due delivery comes before any account's second one (round robin
    by account), and with `per_account` an account never holds more than that many locked
    deliveries, whichever sender holds them: one account's receivers that hang cannot take
    every slot. Three statements, not `UPDATE ... WHERE id IN (SELECT ... LIMIT n FOR UPDATE
    SKIP LOCKED)`: PostgreSQL may evaluate such a subquery more than once and so lock more
    than n rows (see task_queue.claim_same_size)."""
    if limit <= 0:
        return []
    now = time.time()
    row = CallbackDelivery
    free = (row.locked_until.is_(None)) | (row.locked_until < now)
    rank = func.row_number().over(
        partition_by=row.account_id, order_by=(row.next_attempt_at, row.id)
    )
    due = (
        select(row.id, row.account_id, row.next_attempt_at, rank.label("rank"))
        .where(row.status == DeliveryState.PENDING, row.next_attempt_at <= now, free)
        .subquery()
    )
    fair = select(due.c.id).order_by(due.c.rank, due.c.next_attempt_at, due.c.id).limit(limit)
    if per_account is not None:
        busy = (
            select(row.account_id, func.count().label("held"))
            .where(row.status == DeliveryState.PENDING, row.locked_until >= now)
            .group_by(row.account_id)
            .subquery()
        )
        fair = fair.outerjoin(busy, busy.c.account_id == due.c.account_id).where(
            due.c.rank + func.coalesce(busy.c.held, 0) <= per_account
        )
    # The dispatcher asks ten times a second and the outbox is mostly empty: look first in
    # a read, which on SQLite takes no write lock (creates would queue behind it).
    with db.read() as session:
        probe = select(row.id).where(
            row.status == DeliveryState.PENDING, row.next_attempt_at <= now, free
        )
        if session.execute(probe.limit(1)).first() is None:
            return []
    with db.transaction() as session:
        candidates = list(session.execute(fair).scalars())
        if not candidates:
            return []
        # Lock what is still free (the condition is checked again on the locked row).
        ids = list(
            session.execute(
                select(row.id)
                .where(row.id.in_(candidates), row.status == DeliveryState.PENDING, free)
                .with_for_update(skip_locked=True)
            ).scalars()
        )
        if not ids:
            return []
        rows = session.execute(
            update(row)
            .where(row.id.in_(ids))
            .values(locked_by=sender, locked_until=now + lock_seconds)
            .returning(
                row.id, row.task_id, row.account_id, row.url, row.webhook_id, row.attempts, row.body
            )
        ).all()
    return [Due(*values) for values in rows]


def record_attempt(
    db: Database,
    due: Due,
    sender: str,
    *,
    body: bytes,
    started_at: float,
    duration: float,
    status_code: int | None,
    error: str | None,
) -> str:
    """Store one attempt and schedule what follows; returns the delivery's new status."""
    number = due.attempts + 1
    succeeded = error is None and status_code is not None and 200 <= status_code < 300
    now = time.time()
    if succeeded:
        values: dict[str, object] = {"status": DeliveryState.SUCCEEDED, "finished_at": now}
    elif number <= len(contract.CALLBACK_RETRY_DELAYS):
        values = {
            "status": DeliveryState.PENDING,
            "next_attempt_at": now + contract.CALLBACK_RETRY_DELAYS[number - 1],
        }
    else:
        values = {"status": DeliveryState.FAILED, "finished_at": now}
    with db.transaction() as session:
        result = session.execute(
            update(CallbackDelivery)
            .where(
                CallbackDelivery.id == due.id,
                CallbackDelivery.locked_by == sender,
                CallbackDelivery.attempts == due.attempts,
            )
            .values(attempts=number, locked_by=None, locked_until=None, body=body, **values)
        )
        if changed_rows(result) != 1:  # our lock expired and another sender took over
            return "lost"
        session.add(
            CallbackAttempt(
                delivery_id=due.id,
                number=number,
                started_at=started_at,
                duration_seconds=duration,
                status_code=status_code,
                error=error,
            )
        )
    return str(values["status"])


def deliveries(db: Database, task_id: str) -> list[tuple[CallbackDelivery, list[CallbackAttempt]]]:
    """A task's deliveries, oldest first, each with its attempts."""
    with db.transaction() as session:
        rows = list(
            session.execute(
                select(CallbackDelivery)
                .where(CallbackDelivery.task_id == task_id)
                .order_by(CallbackDelivery.id)
            ).scalars()
        )
        attempts = list(
            session.execute(
                select(CallbackAttempt)
                .where(CallbackAttempt.delivery_id.in_([row.id for row in rows]))
                .order_by(CallbackAttempt.delivery_id, CallbackAttempt.number)
            ).scalars()
        )
    by_delivery: dict[int, list[CallbackAttempt]] = {row.id: [] for row in rows}
    for attempt in attempts:
        by_delivery[attempt.delivery_id].append(attempt)
    return [(row, by_delivery[row.id]) for row in rows]


class DeliveryPending(Exception):
    """The task's callback is still being delivered; a redelivery would run beside it."""


class RedeliveryLimited(Exception):
    """The account has redelivered as often as it may this minute."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry in {retry_after} s")
        self.retry_after = retry_after


REDELIVERY_WINDOW_SECONDS = 60.0


def redeliver(db: Database, task: Task, per_minute: int) -> None:
    """Queue a new delivery of an ended task's callback (same webhook-id, fresh attempts).

    Refused while one of the task's deliveries is still pending (each is up to four
    attempts of 10 s; stacking them is how one account could fill the sender), and past
    `per_minute` redeliveries by the account in the last minute. The count is of the
    outbox itself (deliveries of a task that already had one), so it holds across API
    processes and needs no table of its own."""
    now = time.time()
    with db.transaction() as session:
        # Serialise redeliveries of one task (PostgreSQL; SQLite serialises all writers).
        session.execute(select(Task.id).where(Task.id == task.id).with_for_update())
        pending = session.execute(
            select(func.count())
            .select_from(CallbackDelivery)
            .where(
                CallbackDelivery.task_id == task.id,
                CallbackDelivery.status == DeliveryState.PENDING,
            )
        ).scalar_one()
        if pending:
            raise DeliveryPending
        earlier = aliased(CallbackDelivery)
        recent = list(
            session.execute(
                select(CallbackDelivery.created_at)
                .where(
                    CallbackDelivery.account_id == task.account_id,
                    CallbackDelivery.created_at > now - REDELIVERY_WINDOW_SECONDS,
                    exists().where(
                        earlier.task_id == CallbackDelivery.task_id,
                        earlier.id < CallbackDelivery.id,
                    ),
                )
                .order_by(CallbackDelivery.created_at)
            ).scalars()
        )
        if len(recent) >= per_minute:
            oldest = recent[len(recent) - per_minute]
            raise RedeliveryLimited(max(1, math.ceil(oldest + REDELIVERY_WINDOW_SECONDS - now)))
        enqueue(session, task)
    wakeups.notify(wakeups.CALLBACKS)


_NEXT_DUE = select(func.min(CallbackDelivery.next_attempt_at)).where(
    CallbackDelivery.status == DeliveryState.PENDING,
    CallbackDelivery.locked_until.is_(None) | (CallbackDelivery.locked_until < bindparam("now")),
)


def next_due(db: Database) -> float | None:
    """When the earliest pending delivery is next due (None: none pending), so that an
    idle sender sleeps no later than a retry's time (a locked one is this or another
    sender's: its release wakes this one, or the poll ceiling bounds the wait)."""
    row = db.read_row(_NEXT_DUE, {"now": time.time()})
    return None if row is None or row[0] is None else float(row[0])
