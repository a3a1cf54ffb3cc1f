"""`estimated_time` of live tasks, from a snapshot of the queue that each API process
reads at most once per `max_age` seconds.

A task's estimate is the work queued ahead of it (tasks processing, and pending tasks
created before it, each at its tier's measured seconds per image) shared by the live
workers, plus its own. Reading that per request made every poll and create pay queries
that grow with the queue; the snapshot reads it once, and each estimate is then a binary
search, however deep the queue.

What the snapshot reads of the pending tasks is bounded too (it read every pending
task's creation time, 12 ms of CPU a second at 10,000 pending): per tier, the creation
times of the `HEAD` oldest, and beyond them a histogram of `BUCKETS` counts over the rest
of the creation times, counted by the database. Places and estimates are exact within
the first `HEAD` tasks of each tier (so in any queue of fewer), and beyond them off by
at most part of one bucket's tasks, interpolated.
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Float, Integer, cast, func, select, text, union_all
from sqlalchemy.orm import Session

from kreaserve import contract
from kreaserve.db import Database
from kreaserve.db.models import Task, WorkerRecord
from kreaserve.states import WorkerState
from kreaserve.worker_registry import WORKER_STALE_SECONDS

#: Seconds per image assumed before any task of that tier has completed.
DEFAULT_SECONDS_PER_IMAGE = {"1K": 5.0, "2K": 20.0}
#: How many recent tasks the throughput estimate averages.
ESTIMATE_WINDOW = 20
#: Pending tasks per tier whose creation times the snapshot holds one by one ...
HEAD = 500
#: ... and the buckets of the histogram of the others.
BUCKETS = 256
#: Literal status: the planners match it to the partial index.
_PENDING = text(f"status = '{contract.PENDING}'")


@dataclass
class Pending:
    """One tier's pending tasks: the oldest creation times one by one (`head`, sorted),
    then the others as a histogram: `counts[i]` created in [start + i * width, start +
    (i + 1) * width), the last bucket closed at `end` (the newest); `noted` holds the
    tasks this process created after the read."""

    head: list[float]
    start: float = 0.0
    end: float = 0.0
    counts: list[int] = field(default_factory=list)
    noted: list[float] = field(default_factory=list)
    #: sums of the counts before each bucket, and of all (made by `summed`): a poll's
    #: estimate is then a few lookups, not a sum over the buckets
    _before: list[int] = field(default_factory=list)

    def summed(self) -> None:
        self._before = [0, *itertools.accumulate(self.counts)]

    def before(self, created_at: float) -> int:
        """How many of these tasks were created strictly before `created_at`."""
        ahead = bisect.bisect_left(self.head, created_at) + bisect.bisect_left(
            self.noted, created_at
        )
        if not self.counts or created_at <= self.start:
            return ahead
        if len(self._before) != len(self.counts) + 1:
            self.summed()
        total = self._before[-1]
        if created_at > self.end:
            return ahead + total
        where = (created_at - self.start) / (self.end - self.start) * len(self.counts)
        whole = min(len(self.counts) - 1, math.floor(where))
        part = math.floor(self.counts[whole] * min(1.0, where - whole))
        # The newest (at `end`) is never before a time up to `end`.
        return ahead + min(total - 1, self._before[whole] + part)


@dataclass(frozen=True)
class Snapshot:
    """The queue as estimates need it, at one moment."""

    #: measured engine seconds per image, by tier
    seconds_per_image: dict[str, float]
    #: pending tasks, by tier
    pending: dict[str, Pending] = field(default_factory=dict)
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
        for quality, pending in self.pending.items():
            # Pending tasks created strictly before this one (never itself).
            queued += rate.get(quality, 0.0) * pending.before(task.created_at)
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
        return sum(pending.before(task.created_at) for pending in self.pending.values()) + 1


def _read_pending(session: Session, postgres: bool) -> dict[str, Pending]:
    """Per tier, the oldest HEAD + 1 creation times, in one statement; for a tier with
    more, its histogram beyond the HEAD-th, counted by the database, in one more."""
    heads = union_all(
        *(
            select(
                select(Task.quality, Task.created_at)
                .where(_PENDING, Task.quality == quality)
                .order_by(Task.created_at)
                .limit(HEAD + 1)
                .subquery()
            )
            for quality in contract.QUALITIES
        )
    )
    pending: dict[str, Pending] = {}
    for quality, created_at in session.execute(select(heads.subquery())):
        pending.setdefault(quality, Pending([])).head.append(created_at)
    for quality, tier in pending.items():
        tier.head.sort()
        if len(tier.head) <= HEAD:
            continue
        del tier.head[HEAD:]
        tier.start = tier.head[-1]
        newest = (
            select(func.max(Task.created_at))
            .where(_PENDING, Task.quality == quality)
            .scalar_subquery()
        )
        place = (Task.created_at - tier.start) * BUCKETS / func.nullif(newest - tier.start, 0)
        # floor(); SQLite's CAST truncates, which is the floor of these positive places.
        bucket = (func.floor(place) if postgres else cast(place, Integer)).label("bucket")
        counts = [0] * BUCKETS
        for index, count, end in session.execute(
            select(bucket, func.count(), cast(newest, Float))
            .where(_PENDING, Task.quality == quality, Task.created_at > tier.start)
            .group_by(bucket)
        ):
            counts[min(BUCKETS - 1, int(index))] += count
            tier.end = end
        tier.counts = counts
        tier.summed()
    return pending


def read_snapshot(db: Database) -> Snapshot:
    """Read the queue in one read transaction: five statements, six or seven when more
    than HEAD tasks of a tier are pending; none of them a scan."""
    began = time.time()
    rates = dict(DEFAULT_SECONDS_PER_IMAGE)
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
        pending = _read_pending(session, db.is_postgres)
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
        """The snapshot if it needs no read (callable on the event loop), else None: the
        one `current()` would give, also while another thread reads the next."""
        snapshot = self._snapshot
        if snapshot is not None and (
            self.clock() - self._read_at < self.max_age or self._reading.locked()
        ):
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
            tier = snapshot.pending.setdefault(task.quality, Pending([]))
            bisect.insort(tier.noted, task.created_at)
