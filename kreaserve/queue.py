"""The task state machine over the task table: create, claim, renew, finish, cancel, reap.

The table is the queue. A claim is one `UPDATE ... WHERE id = (SELECT ... FOR UPDATE
SKIP LOCKED) RETURNING` on PostgreSQL (the same statement under `BEGIN IMMEDIATE` on
SQLite), and carries a lease the worker renews; a task whose lease ran out goes back
to pending, so a dead worker loses nothing. Every transition that moves credits does
it in the same transaction, guarded by the task's current state, so a task is charged
or released exactly once whatever is retried.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from kreaserve import contract, ledger, limits, metrics
from kreaserve.callbacks import outbox
from kreaserve.db import Database
from kreaserve.db.models import Task, WorkerRecord
from kreaserve.db.rows import changed_rows

#: A worker that has not renewed its heartbeat for this long counts as gone.
WORKER_STALE_SECONDS = 30.0


#: The error of a task its owner cancelled (the contract's `request_cancelled`).
CANCELLED_ERROR = {"error_code": "request_cancelled", "error_message": "Cancelled by the client."}


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


def create(
    db: Database,
    account_id: int,
    key_id: int | None,
    user_group: str,
    params: NewTask,
    price_units: int,
    max_in_flight: int | None = None,
) -> Task:
    """Check the account's limits, reserve the price and enqueue the task, in one
    transaction of three statements (`limits.reserve_task`, the ledger entry, the task).

    `max_in_flight` is the server's default limit of tasks in flight, for accounts that
    have none of their own (None: no default limit)."""
    now = time.time()
    created = int(now)
    task_id = contract.new_task_id(created)
    seed = params.seed or secrets.randbelow(contract.SEED_MAX) + 1
    width, height = contract.pixels(params.size, params.quality)
    with db.transaction() as session:
        limits.reserve_task(session, account_id, price_units, task_id, max_in_flight)
        task = Task(
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
            status=contract.PENDING,
            progress=0,
            cancel_requested=False,
            created=created,
            created_at=now,
            attempts=0,
            price_units=price_units,
            user_group=user_group,
            billing_state="reserved",
            results_purged=False,
        )
        session.add(task)
    metrics.task_created(task)
    return task


def get(db: Database, account_id: int, task_id: str) -> Task | None:
    """The account's task, or None (also for another account's task): one read."""
    with db.read() as session:
        return session.execute(
            select(Task).where(Task.id == task_id, Task.account_id == account_id)
        ).scalar_one_or_none()


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
    db: Database, task_id: str, worker_id: str, lease_seconds: float, progress: int | None = None
) -> LeaseState:
    """Extend the lease (and record progress); tells the worker about cancellation."""
    values: dict[str, object] = {"lease_expires_at": time.time() + lease_seconds}
    if progress is not None:
        values["progress"] = progress
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


def _end(
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
        task = _end(
            session,
            task_id,
            worker_id,
            contract.COMPLETED,
            progress=100,
            result_keys=result_keys,
            results_expire_at=now + ttl_seconds,
            engine_seconds=engine_seconds,
            billing_state="charged",
        )
        if task is None:
            return False
        ledger.charge(session, task.account_id, task.price_units, task.id)
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
        task = _end(
            session,
            task_id,
            worker_id,
            status,
            error_code=code,
            error_message=message,
            billing_state="released",
        )
        if task is None:
            return False
        ledger.release(session, task.account_id, task.price_units, task.id)
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
                billing_state="released",
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


def requeue(db: Database, task_id: str, worker_id: str) -> bool:
    """Hand a held task back to the queue (its worker is stopping or its engine died)."""
    with db.transaction() as session:
        result = session.execute(
            update(Task)
            .where(
                Task.id == task_id, Task.worker_id == worker_id, Task.status == contract.PROCESSING
            )
            .values(status=contract.PENDING, worker_id=None, lease_expires_at=None, progress=0)
        )
    return changed_rows(result) == 1


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
                task = _end(
                    session,
                    row.id,
                    None,
                    contract.CANCELLED,
                    **CANCELLED_ERROR,
                    billing_state="released",
                )
            elif row.attempts >= max_attempts:
                task = _end(
                    session,
                    row.id,
                    None,
                    contract.FAILED,
                    error_code="service_error",
                    error_message=f"The worker stopped {row.attempts} times while "
                    "running this task; it was given up.",
                    billing_state="released",
                )
            else:
                session.execute(
                    update(Task)
                    .where(Task.id == row.id, Task.status == contract.PROCESSING)
                    .values(
                        status=contract.PENDING, worker_id=None, lease_expires_at=None, progress=0
                    )
                )
                continue
            if task is not None:
                ledger.release(session, task.account_id, task.price_units, task.id)
                ended.append(task)
    for task in ended:
        metrics.task_ended(task)
    return len(expired)


# --- workers -----------------------------------------------------------------------------


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


# --- result expiry ------------------------------------------------------------------------


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
    with db.transaction() as session:
        session.execute(update(Task).where(Task.id == task_id).values(results_purged=True))
