"""The task state machine over the task table: create, claim, renew, finish, cancel, reap.

The table is the queue. A claim is one `UPDATE ... WHERE id = (SELECT ... FOR UPDATE
SKIP LOCKED) RETURNING` on PostgreSQL (the same statement under `BEGIN IMMEDIATE` on
SQLite), and carries a lease the worker renews; a task whose lease ran out goes back
to pending, so a dead worker loses nothing. Every transition that moves credits does
it in the same transaction, guarded by the task's current state, so a task is charged
or released exactly once whatever is retried.

Three modules, by who moves the task: `submit` (the client: create, read, cancel),
`leases` (the worker holding it: claim, renew, hand back; and the reaper of leases that
ran out), `endings` (the terminal transitions, with their billing). Callers use this
package's names, so a test can replace one transition in one place.
"""

from __future__ import annotations

from kreaserve.task_queue.endings import (
    CANCELLED_ERROR,
    complete,
    end_cancelled,
    fail,
)
from kreaserve.task_queue.leases import (
    Claim,
    LeaseState,
    claim,
    claim_batch,
    claim_same_size,
    reap,
    renew,
    requeue,
)
from kreaserve.task_queue.submit import (
    DailyCapReached,
    InsufficientCredits,
    LimitReached,
    NewTask,
    cancel,
    create,
    get,
    get_many,
)

__all__ = [
    "CANCELLED_ERROR",
    "Claim",
    "DailyCapReached",
    "InsufficientCredits",
    "LeaseState",
    "LimitReached",
    "NewTask",
    "cancel",
    "claim",
    "claim_batch",
    "claim_same_size",
    "complete",
    "create",
    "end_cancelled",
    "fail",
    "get",
    "get_many",
    "reap",
    "renew",
    "requeue",
]
