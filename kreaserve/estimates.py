"""`estimated_time` of live tasks, from a snapshot of the queue that each API process
reads at most once per `max_age` seconds.

A task's estimate is the work queued ahead of it (tasks processing, and pending tasks
created before it, each at its tier's measured seconds per image) shared by the live
workers, plus its own. Reading that per request made every poll and create pay queries
that grow with the queue; the snapshot reads it once (the pending tasks' tiers and
creation times through a partial index, the last completions' engine times through
another) and each estimate is then a binary search, however deep the queue.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import func, select, text

from kreaserve import contract
from kreaserve.db import Database
from kreaserve.db.models import Task, WorkerRecord
from kreaserve.states import WorkerState
from kreaserve.worker_registry import WORKER_STALE_SECONDS

#: Seconds per image assumed before any task of that tier has completed.
DEFAULT_SECONDS_PER_IMAGE = {"1K": 5.0, "2K": 20.0}
#: How many recent tasks the throughput estimate averages.
ESTIMATE_WINDOW = 20


@dataclass(frozen=True)
class Snapshot:
    """The queue as estimates need it, at one moment."""

    #: measured engine seconds per image, by tier
    seconds_per_image: dict[str, float]
    #: creation times of pending tasks, sorted, by tier
    pending: dict[str, list[float]] = field(default_factory=dict)
    #: processing tasks by tier
    processing: dict[str, int] = field(default_factory=dict)
    ready_workers: int = 0
    #: wall-clock time the read began; tasks created later are not in it
    read_at: float = 0.0

    def estimate(self, task: Task) -> int:
        """Seconds until the task's result is expected (0 once it has ended)."""
        if task.status in contract.TERMINAL:
            return 0
        rate = self.seconds_per_image
        queued = 0.0
        for quality, created in self.pending.items():
            # Pending tasks created strictly before this one (never itself).
            queued += rate.get(quality, 0.0) * bisect.bisect_left(created, task.created_at)
        for quality, count in self.processing.items():
            if task.status == contract.PROCESSING and quality == task.quality:
                count -= 1
            queued += rate.get(quality, 0.0) * max(0, count)
        own = rate.get(task.quality, DEFAULT_SECONDS_PER_IMAGE["1K"])
        if task.status == contract.PROCESSING:
            own *= max(0.0, 1 - task.progress / 100)
        return max(1, math.ceil(queued / max(1, self.ready_workers) + own))

    def position(self, task: Task) -> int:
        """A pending task's place in the queue: 1 when it is the next to be claimed."""
        ahead = sum(
            bisect.bisect_left(created, task.created_at) for created in self.pending.values()
        )
        return ahead + 1


def read_snapshot(db: Database) -> Snapshot:
    """Read the queue: five statements in one read transaction, none of them a scan."""
    began = time.time()
    rates = dict(DEFAULT_SECONDS_PER_IMAGE)
    pending: dict[str, list[float]] = {}
    with db.read() as session:
        for quality in contract.QUALITIES:
            # Literal status: the planners match it to the partial index.
            recent = (
                select(Task.engine_seconds)
                .where(
                    text(f"status = '{contract.COMPLETED}'"),
                    Task.quality == quality,
                    Task.engine_seconds.is_not(None),
                )
                .order_by(Task.finished_at.desc())
                .limit(ESTIMATE_WINDOW)
                .subquery()
            )
            average = session.execute(select(func.avg(recent.c.engine_seconds))).scalar()
            if average:
                rates[quality] = float(average)
        for quality, created_at in session.execute(
            select(Task.quality, Task.created_at).where(text(f"status = '{contract.PENDING}'"))
        ):
            pending.setdefault(quality, []).append(created_at)
        processing = dict(
            session.execute(
                select(Task.quality, func.count())
                .where(Task.status == contract.PROCESSING)
                .group_by(Task.quality)
            ).all()
        )
        workers = session.execute(
            select(func.count())
            .select_from(WorkerRecord)
            .where(
                WorkerRecord.state == WorkerState.READY,
                WorkerRecord.heartbeat_at > time.time() - WORKER_STALE_SECONDS,
            )
        ).scalar_one()
    for created in pending.values():
        created.sort()
    return Snapshot(rates, pending, processing, workers, began)


class QueueEstimates:
    """The snapshot of this process, read again when older than `max_age` seconds.

    One caller reads at a time; the others meanwhile use the previous snapshot, so a
    refresh never makes several requests wait."""

    def __init__(
        self, db: Database, max_age: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.db, self.max_age, self.clock = db, max_age, clock
        self._snapshot: Snapshot | None = None
        self._read_at = -math.inf
        self._reading = threading.Lock()

    def current(self) -> Snapshot:
        """A snapshot at most `max_age` old (may read the database: call off the loop)."""
        snapshot = self._snapshot
        if snapshot is not None and self.clock() - self._read_at < self.max_age:
            return snapshot
        if not self._reading.acquire(blocking=snapshot is None):
            return snapshot  # type: ignore[return-value]  # another thread is reading
        try:
            if self._snapshot is None or self.clock() - self._read_at >= self.max_age:
                started = self.clock()
                self._snapshot = read_snapshot(self.db)
                self._read_at = started
            return self._snapshot
        finally:
            self._reading.release()

    def fresh(self) -> Snapshot | None:
        """The snapshot if it needs no read (callable on the event loop), else None."""
        snapshot = self._snapshot
        if snapshot is not None and self.clock() - self._read_at < self.max_age:
            return snapshot
        return None

    def estimate(self, task: Task) -> int:
        if task.status in contract.TERMINAL:
            return 0
        return self.current().estimate(task)

    def position(self, task: Task) -> int:
        """The pending `task`'s place in the queue (may read the database: call off the loop)."""
        return self.current().position(task)

    def note_created(self, task: Task) -> None:
        """Count a task this process just created in the current snapshot, so the next
        task's estimate includes it without waiting for the next read."""
        snapshot = self._snapshot
        if snapshot is not None and task.created_at >= snapshot.read_at:
            bisect.insort(snapshot.pending.setdefault(task.quality, []), task.created_at)
