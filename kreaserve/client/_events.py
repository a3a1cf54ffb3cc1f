"""The SDK's side of kreaserve's GET /v1/tasks/{id}/events (read with httpx-sse): typed
events, how each updates the task being followed, and the answers that mean "no events
here" (the hosted API, an older server), after which the clients poll instead."""

from __future__ import annotations

import json

import httpx
from httpx_sse import ServerSentEvent

from kreaserve.client.models import Task, TaskEvent, TaskInfo

#: A stream is silent at most 15 s (the server's keep-alive); longer means it is broken.
READ_TIMEOUT = 45.0
#: The last event of a stream: the ended task object.
FINAL = "task"


class EventsUnavailable(Exception):
    """The server has no events route (or the stream broke for good): poll instead."""


def headers(last_event_id: str | None) -> dict[str, str]:
    return {"Last-Event-ID": last_event_id} if last_event_id else {}


def timeout(base: httpx.Timeout, remaining: float) -> httpx.Timeout:
    """The request's time-outs, reading at most READ_TIMEOUT (or what is left) at a time."""
    return httpx.Timeout(base.connect, read=max(0.1, min(READ_TIMEOUT, remaining)))


def unsupported(response: httpx.Response) -> bool:
    """A 404 or 405 that is not about the task: the route does not exist on this server."""
    if response.status_code not in (404, 405):
        return False
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return True
    return code != "task_not_found"


def parse(sse: ServerSentEvent) -> TaskEvent | None:
    """The typed event, or None for one this SDK does not know (a newer server's)."""
    try:
        data = json.loads(sse.data)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if sse.event == FINAL:
        return TaskEvent(event=FINAL, id=sse.id or None, task=Task.model_validate(data))
    if sse.event not in ("queued", "progress"):
        return None
    return TaskEvent.model_validate({**data, "event": sse.event, "id": sse.id or None})


def updated(task: Task, event: TaskEvent) -> Task:
    """`task` as the event says it stands now."""
    if event.task is not None:
        return event.task
    info = TaskInfo.model_validate(
        {**task.task_info.model_dump(), "estimated_time": event.estimated_time}
    )
    return task.model_copy(
        update={
            "status": event.status or task.status,
            "progress": task.progress if event.progress is None else event.progress,
            "phase": event.phase,
            "position": event.position,
            "task_info": info,
        }
    )
