"""The client's transitions of a task: create it (reserving its price), read it, cancel it."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from sqlalchemy import bindparam, insert, select, update

from kreaserve import contract, idempotency, images, ledger, limits, metrics, wakeups
from kreaserve.callbacks import outbox
from kreaserve.db import Database
from kreaserve.db.models import Task
from kreaserve.db.rows import detached
from kreaserve.states import BillingState
from kreaserve.task_queue.endings import CANCELLED_ERROR

# The refusals of `create` (defined with the limits that raise them).
InsufficientCredits = limits.InsufficientCredits
LimitReached = limits.LimitReached
DailyCapReached = limits.DailyCapReached


@dataclass(frozen=True)
class NewTask:
    """Validated parameters of a task to create."""

    prompt: str
    size: str
    quality: str
    seed: int | None
    nsfw_check: bool
    callback_url: str | None
    model: str = contract.MODEL
    traceparent: str | None = None
    output_format: str = images.DEFAULT_FORMAT
    output_quality: int = images.DEFAULT_QUALITY


def create(
    db: Database,
    account_id: int,
    key_id: int | None,
    user_group: str,
    params: NewTask,
    price_units: int,
    max_in_flight: int | None = None,
    key: idempotency.Key | None = None,
) -> Task:
    """Check the account's limits, reserve the price and enqueue the task, in one
    transaction of three statements (`limits.reserve_task`, the ledger entry, the task).

    `max_in_flight` is the server's default limit of tasks in flight, for accounts that
    have none of their own (None: no default limit). With an idempotency `key`, one more
    statement comes first (see kreaserve/idempotency.py), which may raise
    `idempotency.Replayed` or `idempotency.KeyReused` instead."""
    now = time.time()
    created = int(now)
    task_id = contract.new_task_id(created)
    seed = params.seed or secrets.randbelow(contract.SEED_MAX) + 1
    width, height = contract.pixels(params.size, params.quality)
    with db.transaction() as session:
        if key is not None:
            key.claim(session, account_id, task_id, now)
        limits.reserve_task(session, account_id, price_units, task_id, max_in_flight)
        values = dict(
            id=task_id,
            account_id=account_id,
            api_key_id=key_id,
            model=params.model,
            prompt=params.prompt,
            size=params.size,
            quality=params.quality,
            width=width,
            height=height,
            seed=seed,
            nsfw_check=params.nsfw_check,
            callback_url=params.callback_url,
            traceparent=params.traceparent,
            output_format=params.output_format,
            output_quality=params.output_quality,
            status=contract.PENDING,
            progress=0,
            cancel_requested=False,
            created=created,
            created_at=now,
            attempts=0,
            price_units=price_units,
            user_group=user_group,
            billing_state=BillingState.RESERVED,
            results_purged=False,
        )
        # Core, and a detached Task of the same values: the ORM's flush of one new row
        # cost more CPU than the whole transaction's statements (issue 12).
        session.connection().execute(_INSERT_TASK, values)
    task = Task(**values)
    wakeups.notify(wakeups.TASKS)
    metrics.task_created(task)
    return task


_INSERT_TASK = insert(Task)


def get(db: Database, account_id: int, task_id: str) -> Task | None:
    """The account's task, or None (also for another account's task): one read."""
    row = db.read_row(_GET, {"task_id": task_id, "account_id": account_id})
    # Core and a detached Task: the ORM's load of the same row costs three times as much.
    return None if row is None else detached(Task, row._mapping)


_GET = select(Task.__table__).where(
    Task.id == bindparam("task_id"), Task.account_id == bindparam("account_id")
)


def get_many(db: Database, account_id: int, task_ids: list[str]) -> dict[str, Task]:
    """The account's tasks among these ids, by id (another account's are left out): one
    read of them all, as `get` reads one."""
    with db.reading() as connection:
        rows = connection.execute(
            select(Task.__table__).where(Task.id.in_(task_ids), Task.account_id == account_id)
        ).all()
    return {row.id: Task(**row._mapping) for row in rows}


def cancel(db: Database, account_id: int, task_id: str) -> Task | None:
    """Cancel a pending task at once; ask the worker to stop a processing one.

    Returns the task as it stands afterwards, or None when the account has no such task.
    """
    with db.transaction() as session:
        task = session.execute(
            update(Task)
            .where(
                Task.id == task_id, Task.account_id == account_id, Task.status == contract.PENDING
            )
            .values(
                status=contract.CANCELLED,
                finished_at=time.time(),
                **CANCELLED_ERROR,
                billing_state=BillingState.RELEASED,
            )
            .returning(Task)
        ).scalar_one_or_none()
        if task is not None:
            ledger.release(session, task.account_id, task.price_units, task.id)
            outbox.enqueue(session, task)
            cancelled_now = task
        else:
            cancelled_now = None
            session.execute(
                update(Task)
                .where(
                    Task.id == task_id,
                    Task.account_id == account_id,
                    Task.status == contract.PROCESSING,
                )
                .values(cancel_requested=True)
            )
            task = session.execute(
                select(Task).where(Task.id == task_id, Task.account_id == account_id)
            ).scalar_one_or_none()
    if cancelled_now is not None:
        metrics.task_ended(cancelled_now)
    return task
