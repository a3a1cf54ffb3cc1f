"""The SDK's side of kreaserve's GET /v1/tasks/{id}/events (read with httpx-sse): typed
events, how each updates the task being followed, the answers that mean "no events here"
(the hosted API, an older server), after which the clients poll instead, and `Resume`:
when a broken stream is opened again, after how long and from which event. The sync and
async clients only do the I/O around these decisions."""

from __future__ import annotations

import json
import time

import httpx
from httpx_sse import ServerSentEvent

from kreaserve.client._core import Retry, error_from
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


class Resume:
    """The decisions of following one task's stream across breaks: a broken or refused
    stream (a 429/503 the retry policy allows) is opened again from after the last event
    seen (Last-Event-ID), up to `retry.retries` times in a row, until `timeout` seconds
    have passed since the start."""

    def __init__(
        self, task_id: str, retry: Retry, timeout: float, last_event_id: str | None
    ) -> None:
        self.task_id, self.retry, self.timeout = task_id, retry, timeout
        self.last_event_id = last_event_id
        self.path = f"/v1/tasks/{task_id}/events"
        self._deadline = time.monotonic() + timeout
        self._failures = 0
        self._delay: float | None = None

    def open(self, base: httpx.Timeout) -> tuple[dict[str, str], httpx.Timeout]:
        """The headers and time-outs of the next try; raises TimeoutError past the end."""
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"task {self.task_id} did not end within {self.timeout} s")
        self._delay = None
        return headers(self.last_event_id), timeout(base, remaining)

    def refused(self, response: httpx.Response) -> None:
        """A read non-2xx answer: raises EventsUnavailable when the server has no events,
        the error when it is not to be retried; otherwise the try counts as broken."""
        if unsupported(response):
            raise EventsUnavailable(f"{response.status_code} from the events route")
        self._delay = self.retry.delay_after(self._failures, response)
        if self._delay is None:
            raise error_from(response)

    def received(self, sse: ServerSentEvent) -> TaskEvent | None:
        """The typed event (None: skip it), which resumes the stream after it."""
        event = parse(sse)
        if event is not None:
            self._failures, self.last_event_id = 0, event.id or self.last_event_id
        return event

    def broke(self) -> float:
        """Seconds to wait before opening the stream again; raises EventsUnavailable after
        more than `retry.retries` breaks in a row."""
        self._failures += 1
        if self._failures > self.retry.retries:
            raise EventsUnavailable(
                f"the events of task {self.task_id} broke {self._failures} times"
            )
        if self._delay is None:
            return self.retry.backoff_delay(self._failures - 1)
        return self._delay
