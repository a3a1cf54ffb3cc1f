"""The SDK following kreaserve's events stream (httpx.MockTransport serving SSE bodies):
typed events, run() following them, a broken stream resumed with Last-Event-ID, bounded
retries, and the fall back to polling where a server has no events. Sync and async."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from kreaserve.client import EventsUnavailable, KreaserveError, TaskEvent
from tests.unit.test_client import DONE, TASK, Harness, error


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


EVENTS = f"/v1/tasks/{TASK['id']}/events"
FINAL = {**TASK, **DONE}


def sse(*events: tuple[int, str, dict[str, Any]]) -> httpx.Response:
    body = "".join(
        f"id: {id_}\r\nevent: {name}\r\ndata: {json.dumps(data)}\r\n\r\n"
        for id_, name, data in events
    )
    return httpx.Response(
        200, text=": ping\r\n\r\n" + body, headers={"content-type": "text/event-stream"}
    )


QUEUED = (100008, "queued", {"status": "pending", "position": 2, "estimated_time": 9})
ENCODING = (110000, "progress", {"status": "processing", "phase": "encoding", "progress": 0})
STEP = (110003, "progress", {"status": "processing", "phase": "denoising 3/8", "progress": 33})
END = (299999, "task", FINAL)


def server(*streams: httpx.Response | Exception) -> tuple[Callable[..., httpx.Response], list]:
    """Creates TASK, answers GETs of it with TASK, and its event requests with `streams`
    in turn; records the Last-Event-ID of each event request."""
    remaining, resumed = list(streams), []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "files.example.test":
            return httpx.Response(200, content=b"png")
        if request.method == "POST":
            return httpx.Response(200, json=TASK)
        if request.url.path == EVENTS:
            resumed.append(request.headers.get("last-event-id"))
            answer = remaining.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        return httpx.Response(200, json=FINAL if not remaining else TASK)

    return handle, resumed


def test_events_are_typed_and_end_with_the_task(kind: str) -> None:
    handle, resumed = server(sse(QUEUED, ENCODING, STEP, END))
    events = Harness(kind, handle).collect("events", TASK["id"])
    assert all(isinstance(e, TaskEvent) for e in events)
    assert [(e.event, e.position, e.phase) for e in events] == [
        ("queued", 2, None),
        ("progress", None, "encoding"),
        ("progress", None, "denoising 3/8"),
        ("task", None, None),
    ]
    assert events[-1].task is not None and events[-1].task.results == DONE["results"]
    assert resumed == [None]


def test_run_follows_the_events_and_shows_the_phase(kind: str) -> None:
    handle, _ = server(sse(QUEUED, ENCODING, STEP, END))
    harness = Harness(kind, handle)
    seen: list[tuple[str, int, str | None, int | None]] = []
    image = harness(
        "run", "a fox", on_update=lambda t: seen.append((t.status, t.progress, t.phase, t.position))
    )
    assert image == b"png"
    assert seen == [
        ("pending", 0, None, None),  # the create's answer
        ("pending", 0, None, None),  # the follow's first look
        ("pending", 0, None, 2),
        ("processing", 0, "encoding", None),
        ("processing", 33, "denoising 3/8", None),
        ("completed", 100, None, None),
    ]
    assert harness.sleeps == []  # nothing polled


def test_a_broken_stream_is_resumed_with_last_event_id(kind: str) -> None:
    handle, resumed = server(
        sse(QUEUED, ENCODING),  # ends without the task: the connection dropped
        httpx.ReadError("connection reset"),
        sse(STEP, END),
    )
    harness = Harness(kind, handle)
    events = harness.collect("events", TASK["id"])
    assert [e.id for e in events] == ["100008", "110000", "110003", "299999"]
    assert resumed == [None, "110000", "110000"]
    assert len(harness.sleeps) == 2


def test_a_stream_that_stays_broken_is_given_up_after_the_retries(kind: str) -> None:
    handle, resumed = server(*[httpx.ReadError("reset")] * 5)
    harness = Harness(kind, handle)
    with pytest.raises(EventsUnavailable):
        harness.collect("events", TASK["id"])
    assert len(resumed) == 4  # the first try and Retry's 3 more


def test_follow_polls_when_the_stream_stays_broken(kind: str) -> None:
    handle, resumed = server(sse(QUEUED), *[httpx.ReadError("reset")] * 3)
    harness = Harness(kind, handle)
    tasks = harness.collect("follow", TASK["id"])
    assert tasks[-1].status == "completed" and tasks[-1].results == DONE["results"]
    assert [t.position for t in tasks] == [None, 2, None]


@pytest.mark.parametrize("status", [404, 405])
def test_a_server_without_events_is_polled(kind: str, status: int) -> None:
    handle, resumed = server(error(status, "not_found"))
    tasks = Harness(kind, handle).collect("follow", TASK["id"])
    assert [t.status for t in tasks] == ["pending", "completed"] and resumed == [None]


def test_an_answer_that_is_not_an_event_stream_is_polled(kind: str) -> None:
    handle, _ = server(httpx.Response(200, json=TASK))
    tasks = Harness(kind, handle).collect("follow", TASK["id"])
    assert tasks[-1].status == "completed"


def test_an_unknown_task_is_an_error_not_a_fallback(kind: str) -> None:
    handle, _ = server(error(404, "task_not_found"))
    with pytest.raises(KreaserveError) as caught:
        Harness(kind, handle).collect("events", TASK["id"])
    assert caught.value.status == 404 and caught.value.code == "task_not_found"


def test_a_503_is_retried_after_its_retry_after(kind: str) -> None:
    handle, _ = server(error(503, "service_unavailable", {"Retry-After": "2"}), sse(END))
    harness = Harness(kind, handle)
    events = harness.collect("events", TASK["id"])
    assert [e.event for e in events] == ["task"] and harness.sleeps == [2.0]


def test_a_204_ends_the_events_at_once(kind: str) -> None:
    handle, resumed = server(httpx.Response(204))
    events = Harness(kind, handle).collect("events", TASK["id"], last_event_id="299999")
    assert events == [] and resumed == ["299999"]


def test_unknown_events_and_bad_data_are_skipped(kind: str) -> None:
    odd = httpx.Response(
        200,
        text="event: preview\r\ndata: {}\r\n\r\nevent: progress\r\ndata: not json\r\n\r\n"
        f"id: 299999\r\nevent: task\r\ndata: {json.dumps(FINAL)}\r\n\r\n",
        headers={"content-type": "text/event-stream"},
    )
    handle, _ = server(odd)
    events = Harness(kind, handle).collect("events", TASK["id"])
    assert [e.event for e in events] == ["task"]
