"""The events of a task's live stream (GET /v1/tasks/{id}/events), computed from the stored
task alone, so any API process, restarted or not, makes the same events with the same ids.

An event id orders where the task is: its attempt, then its stage within the attempt
(queued, then the phases of `kreaserve.phases`), so ids grow as the task advances and a
client that resumes with `Last-Event-ID` gets only what is newer. The last event is the
task object itself (the route renders it as GET /v1/tasks/{id} does)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kreaserve import contract, phases
from kreaserve.db.models import Task

#: Ids per attempt: queued 0-9999 (by place in the queue), phases 10000-49999, end 99999.
ATTEMPT = 100_000
_QUEUE_PLACES = 9_999
_END = 99_999

QUEUED = "queued"
PROGRESS = "progress"
TASK = "task"


@dataclass(frozen=True)
class LiveEvent:
    """One event before the end: its id, its name and its JSON data."""

    id: int
    event: str
    data: dict[str, Any]


def final_id(task: Task) -> int:
    """The id of the last event (the task object), above every id the task had before."""
    return (task.attempts + 1) * ATTEMPT + _END


def live_event(task: Task, position: int | None, estimated_time: int | None) -> LiveEvent:
    """Where a pending or processing task stands; `position` is a pending task's place in
    the queue (1: next)."""
    if task.status == contract.PENDING:
        # A pending task waits for its next attempt; nearer the front ranks higher.
        place = max(1, position or 1)
        return LiveEvent(
            (task.attempts + 1) * ATTEMPT + _QUEUE_PLACES - min(place, _QUEUE_PLACES),
            QUEUED,
            {"status": task.status, "position": place, "estimated_time": estimated_time},
        )
    phase = task.phase or phases.ENCODING
    return LiveEvent(
        task.attempts * ATTEMPT + phases.rank(phase),
        PROGRESS,
        {
            "status": task.status,
            "phase": phase,
            "progress": task.progress,
            "estimated_time": estimated_time,
        },
    )


def parse_last_event_id(value: str | None) -> int | None:
    """The id a resuming client last saw, or None for one that is not ours (then the
    stream starts over: the events are idempotent, the last is the task object)."""
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or len(value) > 18:
        return None
    return int(value)
