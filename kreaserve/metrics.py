"""Prometheus metrics of the API, the queue and the workers (prometheus-client).

Counters and histograms are recorded where things happen (the queue's state changes, the
HTTP middleware, the callback sender) in whichever process does them; Prometheus adds
the processes up. Queue depth, the oldest pending task's age and engines by state are
read from the database at scrape time (`DatabaseCollector`), so every process reports
the same truth, whoever changed it.

Several processes behind one port (uvicorn or gunicorn workers over the app factory):
set `PROMETHEUS_MULTIPROC_DIR` to an empty folder for them all before they start, as
prometheus-client's multiprocess mode requires; `render()` then adds every process's
values up (the one live gauge, open event streams, is summed over the live processes).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from kreaserve.db import Database

CONTENT_TYPE = CONTENT_TYPE_LATEST

HTTP_REQUESTS = Counter(
    "kreaserve_http_requests",
    "HTTP requests answered, by route template and status.",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "kreaserve_http_request_duration_seconds",
    "Time to answer an HTTP request.",
    ["method", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
TASKS_CREATED = Counter("kreaserve_tasks_created", "Tasks accepted, by tier.", ["tier"])
TASKS_COMPLETED = Counter("kreaserve_tasks_completed", "Tasks completed, by tier.", ["tier"])
TASKS_FAILED = Counter(
    "kreaserve_tasks_failed", "Tasks failed, by tier and task error code.", ["tier", "code"]
)
TASKS_CANCELLED = Counter("kreaserve_tasks_cancelled", "Tasks cancelled, by tier.", ["tier"])
CREDITS_CHARGED = Counter(
    "kreaserve_credits_charged", "Credits charged for completed tasks, by tier.", ["tier"]
)
EVENT_STREAMS = Gauge(
    "kreaserve_event_streams_open",
    "Open GET /v1/tasks/{id}/events streams.",
    multiprocess_mode="livesum",
)
_TASK_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
QUEUE_WAIT = Histogram(
    "kreaserve_queue_wait_seconds",
    "From creation to a worker's claim "
    "(first claims), by pixel size and the batch it was claimed in.",
    ["size", "batch"],
    buckets=_TASK_BUCKETS,
)
GENERATION = Histogram(
    "kreaserve_generation_seconds",
    "Engine seconds per image of completed tasks, by pixel size and batch size.",
    ["size", "batch"],
    buckets=_TASK_BUCKETS,
)
CALLBACK_ATTEMPTS = Counter(
    "kreaserve_callback_attempts",
    "Callback POSTs, by outcome and attempt number.",
    ["outcome", "attempt"],
)


def size_label(width: int, height: int) -> str:
    return f"{width}x{height}"


def task_created(task: Any) -> None:
    TASKS_CREATED.labels(task.quality).inc()


def task_ended(task: Any, *, batch: int | None = None) -> None:
    """Count a task that reached completed, failed or cancelled (after its commit)."""
    from kreaserve import contract, ledger

    if task.status == contract.COMPLETED:
        TASKS_COMPLETED.labels(task.quality).inc()
        CREDITS_CHARGED.labels(task.quality).inc(ledger.to_credits(task.price_units))
        if task.engine_seconds is not None and batch is not None:
            GENERATION.labels(size_label(task.width, task.height), str(batch)).observe(
                task.engine_seconds
            )
    elif task.status == contract.CANCELLED:
        TASKS_CANCELLED.labels(task.quality).inc()
    else:
        TASKS_FAILED.labels(task.quality, task.error_code or "unknown").inc()


def tasks_claimed(claims: Iterable[Any], now: float | None = None) -> None:
    """Queue wait of freshly claimed tasks (first attempts; a retry's wait is not news)."""
    claims = list(claims)
    now = time.time() if now is None else now
    for claim in claims:
        if claim.attempts == 1 and claim.created_at:
            QUEUE_WAIT.labels(size_label(claim.width, claim.height), str(len(claims))).observe(
                max(0.0, now - claim.created_at)
            )


def callback_attempt(error: str | None, status_code: int | None, attempt: int) -> None:
    if error is None:
        outcome = "delivered"
    elif status_code is not None:
        outcome = "http_error"
    elif error.startswith("refused"):
        outcome = "refused"
    elif error.startswith("timed out"):
        outcome = "timeout"
    else:
        outcome = "connection_error"
    CALLBACK_ATTEMPTS.labels(outcome, str(attempt)).inc()


class DatabaseCollector(Collector):
    """Queue depth, the oldest pending task's age, tasks processing and engines by state,
    from the database at scrape time: two indexed queries."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from sqlalchemy import func, select

        from kreaserve import contract, worker_registry
        from kreaserve.db.models import Task
        from kreaserve.states import WorkerState

        now = time.time()
        with self.db.read() as session:
            rows = session.execute(
                select(Task.status, func.count(), func.min(Task.created_at))
                .where(Task.status.in_((contract.PENDING, contract.PROCESSING)))
                .group_by(Task.status)
            ).all()
        by_status = {row[0]: (row[1], row[2]) for row in rows}
        pending, oldest = by_status.get(contract.PENDING, (0, None))
        yield GaugeMetricFamily(
            "kreaserve_queue_depth", "Pending tasks (the autoscaling signal).", value=pending
        )
        yield GaugeMetricFamily(
            "kreaserve_queue_oldest_age_seconds",
            "Age of the oldest pending task; 0 when none is pending.",
            value=max(0.0, now - oldest) if oldest else 0.0,
        )
        yield GaugeMetricFamily(
            "kreaserve_tasks_processing",
            "Tasks held by a worker.",
            value=by_status.get(contract.PROCESSING, (0, None))[0],
        )
        engines = GaugeMetricFamily(
            "kreaserve_engines", "Engines of live workers, by state.", labels=["state"]
        )
        counts: dict[str, int] = dict.fromkeys(
            (WorkerState.STARTING, WorkerState.READY, WorkerState.FAILED), 0
        )
        for worker in worker_registry.live_workers(self.db):
            counts[worker.state] = counts.get(worker.state, 0) + 1
        for state, count in sorted(counts.items()):
            engines.add_metric([state], count)
        yield engines


def registry_for(db: Database | None) -> CollectorRegistry:
    """What a scrape reads: this process's metrics (or, in multiprocess mode, every
    process's) and, given a database, the queue and engines read from it."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_Default())
    if db is not None:
        registry.register(DatabaseCollector(db))
    return registry


def render(db: Database | None) -> bytes:
    """The text exposition format of `registry_for(db)`."""
    return generate_latest(registry_for(db))


class _Default(Collector):
    """The process-global registry (counters above, process and platform collectors)."""

    def collect(self) -> Iterator[Any]:
        yield from REGISTRY.collect()
