"""GET /v1/tasks/{id}/events: a task's progress as Server-Sent Events (sse-starlette).

Everything streamed is read from the database (the worker records phase and progress in
its lease renewals), so any API process serves any stream and a client that reconnects
after a restart, with `Last-Event-ID`, gets the rest. A stream reads its task once per
`POLL_SECONDS` in a short read transaction (no session is held between reads), the same
cost as a client polling GET /v1/tasks/{id} once a second, minus the authentication.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Response
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from kreaserve import contract, metrics, presenters, task_events, task_queue
from kreaserve.api.deps import PrincipalDep, Services, ServicesDep
from kreaserve.api.presenters import task_answer
from kreaserve.api.routes.tasks import check_task_id, not_found
from kreaserve.db.models import Task

router = APIRouter()

#: One event of the stream (how OpenAPI tools such as schemathesis read `text/event-stream`:
#: each event is an object of the SSE fields). `data` is JSON: the queue place, the phase,
#: or the task object.
EVENT_SCHEMA = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["queued", "progress", "task"]},
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "data": {"type": "string", "description": "A JSON object."},
        "retry": {"type": "integer", "minimum": 0},
    },
}

#: How often a stream reads its task.
POLL_SECONDS = 1.0
#: A comment line this often keeps proxies from closing a quiet stream.
PING_SECONDS = 15.0


@router.get(
    "/v1/tasks/{task_id}/events",
    response_model=None,
    responses={
        200: {
            "description": "Server-Sent Events: `queued`, `progress`, then `task` (the task "
            "object), then the end.",
            "content": {"text/event-stream": {"schema": EVENT_SCHEMA}},
        },
        204: {"description": "The client (by `Last-Event-ID`) has already seen the end."},
    },
)
async def task_event_stream(
    task_id: str,
    services: ServicesDep,
    principal: PrincipalDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    """Queue position while pending, each phase while processing, then the task object
    (as GET /v1/tasks/{id} answers it), then the end. 204 for a client that has already
    seen the end (so a browser's EventSource stops reconnecting)."""
    check_task_id(task_id)
    account_id = principal.account_id
    task = await run_in_threadpool(task_queue.get, services.db, account_id, task_id)
    if task is None:
        raise not_found(task_id)
    after = task_events.parse_last_event_id(last_event_id) or 0
    if task.status in contract.TERMINAL and after >= task_events.final_id(task):
        return Response(status_code=204)
    return EventSourceResponse(
        _events(services, account_id, task, after),
        ping=PING_SECONDS,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _events(
    services: Services, account_id: int, task: Task, after: int
) -> AsyncIterator[ServerSentEvent]:
    """The stream from `task` as first read; stops (and holds nothing) when the client
    goes: the cancellation arrives at an await, between reads."""
    metrics.EVENT_STREAMS.inc()
    try:
        while True:
            if task.status in contract.TERMINAL:
                body = await run_in_threadpool(task_answer, services, task)
                yield ServerSentEvent(
                    presenters.render_json(body).decode(),
                    event=task_events.TASK,
                    id=str(task_events.final_id(task)),
                )
                return
            event = await run_in_threadpool(_live_event, services, task, after)
            if event is not None:
                after = event.id
                yield ServerSentEvent(
                    presenters.render_json(event.data).decode(), event=event.event, id=str(after)
                )
            await asyncio.sleep(POLL_SECONDS)
            found = await run_in_threadpool(task_queue.get, services.db, account_id, task.id)
            if found is None:  # gone (never, short of a manual delete): nothing more to say
                return
            task = found
    finally:
        metrics.EVENT_STREAMS.dec()


def _live_event(services: Services, task: Task, after: int) -> task_events.LiveEvent | None:
    """The event of a live task if it is newer than `after`, with the place and estimate
    of this process's queue snapshot (read at most once a second per process, shared by
    every stream and poll; a processing task's stream reads it only when it has news)."""
    estimates = services.estimates
    position = estimates.position(task) if task.status == contract.PENDING else None
    if task_events.live_event(task, position, None).id <= after:
        return None
    return task_events.live_event(task, position, estimates.estimate(task))
