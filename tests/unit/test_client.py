"""The SDK against httpx.MockTransport: retries (connection errors, 429, 503), Retry-After
honoured and bounded, one Idempotency-Key per create across its retries, typed parsing,
run(), and the sync and async clients behaving alike (every test runs on both)."""

from __future__ import annotations

import asyncio
import email.utils
import inspect
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from kreaserve.client import (
    AsyncClient,
    Client,
    KreaserveError,
    Retry,
    Task,
    TaskFailed,
)
from kreaserve.client._core import PollRhythm

BASE = "https://api.example.test"
TASK = {
    "created": 1751280000,
    "id": "task-unified-1751280000-k2t9x8a3",
    "model": "krea-2-turbo",
    "object": "image.generation.task",
    "progress": 0,
    "status": "pending",
    "task_info": {"can_cancel": True, "estimated_time": 45},
    "type": "image",
    "usage": {"billing_rule": "per_call", "credits_reserved": 0.45, "user_group": "default"},
}
Handler = Callable[[httpx.Request], httpx.Response]


def error(status: int, code: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"error": {"code": code, "message": f"{code}!", "type": "x", "param": "size"}}
    return httpx.Response(status, json=body, headers=headers)


class Harness:
    """One client, sync or async, over a MockTransport; calls look the same for both and
    the client's sleeps are recorded instead of slept."""

    def __init__(self, kind: str, handler: Handler, **options: Any) -> None:
        self.kind, self.requests, self.sleeps = kind, [], []

        def record(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            return handler(request)

        transport = httpx.MockTransport(record)
        options.setdefault("retry", Retry(backoff=0.4, max_backoff=1.0))
        if kind == "sync":
            self.client: Any = Client(BASE, "ks_key", transport=transport, **options)
            self.client._sleep = self.sleeps.append
        else:
            self.client = AsyncClient(BASE, "ks_key", transport=transport, **options)

            async def sleep(seconds: float) -> None:
                self.sleeps.append(seconds)

            self.client._sleep = sleep

    def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self.client, method)(*args, **kwargs)
        return asyncio.run(result) if self.kind == "async" else result

    def collect(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        """All items of an iterator method (follow, iter_tasks)."""
        items = getattr(self.client, method)(*args, **kwargs)
        if self.kind == "sync":
            return list(items)

        async def drain() -> list[Any]:
            return [item async for item in items]

        return asyncio.run(drain())


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def sequence(*answers: httpx.Response | Exception) -> Handler:
    """A handler giving these answers (or raising these errors) in turn."""
    queue = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handle


# --- retries -------------------------------------------------------------------------------


def test_connection_errors_are_retried_with_growing_backoff(kind: str) -> None:
    refused = httpx.ConnectError("refused")
    harness = Harness(kind, sequence(refused, refused, httpx.Response(200, json=TASK)))
    task = harness("get", TASK["id"])
    assert task.id == TASK["id"] and len(harness.requests) == 3
    first, second = harness.sleeps
    assert 0.2 <= first <= 0.4 and 0.4 <= second <= 0.8


@pytest.mark.parametrize("status", [429, 503])
def test_429_and_503_wait_exactly_the_retry_after(kind: str, status: int) -> None:
    harness = Harness(
        kind,
        sequence(
            error(status, "busy", {"Retry-After": "7"}),
            error(status, "busy", {"Retry-After": "2"}),
            httpx.Response(200, json={"balance": 1.5}),
        ),
    )
    assert harness("credits").balance == 1.5
    assert harness.sleeps == [7.0, 2.0]


def test_retry_after_as_an_http_date(kind: str) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    harness = Harness(
        kind, sequence(error(503, "down", {"Retry-After": when}), httpx.Response(200, json=TASK))
    )
    harness("get", TASK["id"])
    assert len(harness.sleeps) == 1 and 27 <= harness.sleeps[0] <= 30


def test_a_retry_after_over_the_bound_is_raised_at_once(kind: str) -> None:
    harness = Harness(
        kind,
        sequence(error(429, "rate_limited", {"Retry-After": "3600"})),
        retry=Retry(max_retry_after=60),
    )
    with pytest.raises(KreaserveError) as caught:
        harness("get", TASK["id"])
    assert caught.value.status == 429 and caught.value.retry_after == 3600
    assert caught.value.code == "rate_limited" and harness.sleeps == []


def test_retries_are_bounded_then_the_last_error_is_raised(kind: str) -> None:
    harness = Harness(
        kind,
        sequence(*[error(503, "service_unavailable")] * 4),
        retry=Retry(retries=3, backoff=0.1),
    )
    with pytest.raises(KreaserveError) as caught:
        harness("get", TASK["id"])
    assert caught.value.status == 503 and caught.value.code == "service_unavailable"
    assert len(harness.requests) == 4 and len(harness.sleeps) == 3


def test_connection_errors_are_bounded_too(kind: str) -> None:
    harness = Harness(kind, sequence(*[httpx.ConnectError("refused")] * 3), retry=Retry(retries=2))
    with pytest.raises(httpx.ConnectError):
        harness("get", TASK["id"])
    assert len(harness.requests) == 3


@pytest.mark.parametrize("status", [400, 401, 402, 404, 500])
def test_other_errors_are_not_retried_and_keep_the_contract_fields(kind: str, status: int) -> None:
    harness = Harness(kind, sequence(error(status, "invalid_size")))
    with pytest.raises(KreaserveError) as caught:
        harness("create", "a fox", size="7:5")
    assert (caught.value.status, caught.value.code, caught.value.param) == (
        status,
        "invalid_size",
        "size",
    )
    assert caught.value.message == "invalid_size!" and len(harness.requests) == 1


def test_an_answer_that_is_not_the_error_shape_still_raises(kind: str) -> None:
    harness = Harness(kind, sequence(httpx.Response(502, text="<html>bad gateway</html>")))
    with pytest.raises(KreaserveError) as caught:
        harness("get", TASK["id"])
    assert caught.value.status == 502 and caught.value.code == "http_error"


def test_a_create_is_resent_after_a_read_timeout_with_the_same_key(kind: str) -> None:
    # It carries an Idempotency-Key: the server answers the resent one with the same task.
    harness = Harness(
        kind,
        sequence(
            httpx.ReadTimeout("slow"),
            httpx.RemoteProtocolError("cut"),
            httpx.Response(200, json=TASK),
        ),
    )
    assert harness("create", "a fox").id == TASK["id"]
    keys = {r.headers["idempotency-key"] for r in harness.requests}
    assert len(harness.requests) == 3 and len(keys) == 1


def test_a_post_without_a_key_is_not_resent_once_it_may_have_reached_the_server(
    kind: str,
) -> None:
    harness = Harness(kind, sequence(httpx.ReadTimeout("slow")))
    with pytest.raises(httpx.ReadTimeout):
        harness("cancel", TASK["id"])
    assert len(harness.requests) == 1


def test_a_read_timeout_on_a_get_is_retried(kind: str) -> None:
    harness = Harness(kind, sequence(httpx.ReadTimeout("slow"), httpx.Response(200, json=TASK)))
    assert harness("get", TASK["id"]).status == "pending"


# --- idempotency key -----------------------------------------------------------------------


def test_one_idempotency_key_per_create_the_same_on_all_its_retries(kind: str) -> None:
    harness = Harness(
        kind,
        sequence(
            httpx.ConnectError("refused"),
            error(429, "rate_limited", {"Retry-After": "1"}),
            error(503, "service_unavailable"),
            httpx.Response(200, json=TASK),
            httpx.Response(200, json=TASK),
        ),
    )
    harness("create", "a fox", size="16:9", seed=7)
    harness("create", "a fox", size="16:9", seed=7)
    keys = [r.headers.get("idempotency-key") for r in harness.requests]
    assert len(harness.requests) == 5
    assert keys[0] and keys[:4] == [keys[0]] * 4
    assert keys[4] and keys[4] != keys[0]  # the next logical create has its own
    bodies = {r.content for r in harness.requests}
    assert len(bodies) == 1
    assert json.loads(bodies.pop()) == {
        "model": "krea-2-turbo",
        "prompt": "a fox",
        "size": "16:9",
        "seed": 7,
    }


def test_a_given_idempotency_key_is_sent_as_is(kind: str) -> None:
    harness = Harness(kind, sequence(httpx.Response(200, json=TASK)))
    harness("create", "a fox", idempotency_key="order-42", output_format="webp")
    request = harness.requests[0]
    assert request.headers["idempotency-key"] == "order-42"
    assert request.headers["authorization"] == "Bearer ks_key"
    assert json.loads(request.content)["output_format"] == "webp"


# --- typed results -------------------------------------------------------------------------


def test_results_are_typed_and_tolerate_added_fields(kind: str) -> None:
    added = {**TASK, "queue_position": 3, "task_info": {"can_cancel": True, "eta": 1}}
    harness = Harness(kind, sequence(httpx.Response(200, json=added)))
    task = harness("get", TASK["id"])
    assert isinstance(task, Task) and task.created == 1751280000
    assert task.usage is not None and task.usage.credits_reserved == 0.45
    assert task.task_info.can_cancel is True and task.task_info.estimated_time is None
    assert task.model_extra == {"queue_position": 3} and not task.done


def test_the_hosted_query_shape_parses(kind: str) -> None:
    hosted = {
        "created": 1756817821,
        "id": "task-unified-1756817821-4x3rx6ny",
        "model": "krea-2-turbo",
        "object": "image.generation.task",
        "progress": 100,
        "results": ["https://cdn.example/a.png"],
        "status": "completed",
        "task_info": {"can_cancel": False},
        "type": "image",
    }
    failed = {
        **hosted,
        "status": "failed",
        "results": None,
        "error": {"code": "content_policy_violation", "message": "no"},
    }
    harness = Harness(
        kind, sequence(httpx.Response(200, json=hosted), httpx.Response(200, json=failed))
    )
    done = harness("get", hosted["id"])
    assert done.done and done.results == ["https://cdn.example/a.png"] and done.seed is None
    assert harness("get", hosted["id"]).error.code == "content_policy_violation"


def test_a_malformed_task_answer_is_an_error_not_a_half_object(kind: str) -> None:
    harness = Harness(kind, sequence(httpx.Response(200, json={"id": 5})))
    with pytest.raises(ValueError):
        harness("get", TASK["id"])


def test_list_tasks_sends_its_parameters_and_iter_tasks_follows_cursors(kind: str) -> None:
    other = {**TASK, "id": "task-unified-1751280000-aaaaaaaa"}
    harness = Harness(
        kind,
        sequence(
            httpx.Response(
                200, json={"object": "list", "data": [TASK], "has_more": True, "next_cursor": "abc"}
            ),
            httpx.Response(
                200,
                json={"object": "list", "data": [other], "has_more": False, "next_cursor": None},
            ),
        ),
    )
    tasks = harness.collect("iter_tasks", status="pending", page_size=1)
    assert [t.id for t in tasks] == [TASK["id"], other["id"]]
    first, second = (dict(r.url.params) for r in harness.requests)
    assert first == {"limit": "1", "status": "pending"}
    assert second == {"limit": "1", "status": "pending", "cursor": "abc"}


# --- following and run() -------------------------------------------------------------------


def server_of_one_task(*states: dict[str, Any], image: bytes = b"\x89PNG fake") -> Handler:
    """Creates TASK, then answers its GETs with `states` in turn; serves its image."""
    remaining = list(states)

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "files.example.test":
            return httpx.Response(200, content=image)
        if request.method == "POST":
            return httpx.Response(200, json=TASK)
        if request.url.path.endswith("/events"):  # a server without events: SDKs poll
            return error(404, "not_found")
        state = remaining.pop(0) if len(remaining) > 1 else remaining[0]
        return httpx.Response(200, json={**TASK, **state})

    return handle


DONE = {
    "status": "completed",
    "progress": 100,
    "task_info": {"can_cancel": False},
    "results": ["https://files.example.test/files/x.png?sig=1"],
}


def test_run_creates_follows_and_downloads(kind: str, tmp_path: Path) -> None:
    harness = Harness(
        kind,
        server_of_one_task(
            {"status": "pending"},
            {"status": "processing", "progress": 25},
            {"status": "processing", "progress": 25},
            {"status": "processing", "progress": 75},
            DONE,
        ),
    )
    seen: list[tuple[str, int]] = []
    image = harness(
        "run",
        "a fox",
        size="4:3",
        output=tmp_path / "fox.png",
        on_update=lambda t: seen.append((t.status, t.progress)),
    )
    assert image == b"\x89PNG fake" and (tmp_path / "fox.png").read_bytes() == image
    assert seen == [
        ("pending", 0),
        ("pending", 0),
        ("processing", 25),
        ("processing", 75),
        ("completed", 100),
    ]
    download = harness.requests[-1]
    assert download.url.host == "files.example.test"
    assert "authorization" not in download.headers  # the key never leaves for file hosts
    assert json.loads(harness.requests[0].content)["size"] == "4:3"
    # Polls back off while nothing changes and tighten again after a change.
    assert harness.sleeps == [0.5, 0.75, 0.5]


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_run_raises_task_failed_with_the_tasks_error(kind: str, status: str) -> None:
    ended = {
        "status": status,
        "task_info": {"can_cancel": False},
        "error": {"code": "generation_failed_no_content", "message": "empty"},
    }
    harness = Harness(kind, server_of_one_task(ended))
    with pytest.raises(TaskFailed) as caught:
        harness("run", "a fox")
    assert caught.value.task.error.code == "generation_failed_no_content"
    assert caught.value.task.status == status


def test_a_failed_download_raises_and_saves_nothing(kind: str, tmp_path: Path) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return error(410, "results_expired")

    harness = Harness(kind, handle)
    with pytest.raises(KreaserveError) as caught:
        harness("download", "https://files.example.test/x.png", tmp_path / "x.png")
    assert caught.value.code == "results_expired" and not list(tmp_path.iterdir())


def test_a_download_follows_a_redirect_to_the_store(kind: str) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "api.example.test":
            return httpx.Response(302, headers={"Location": "https://bucket.s3.test/x?sig=2"})
        return httpx.Response(200, content=b"png bytes")

    harness = Harness(kind, handle)
    assert harness("download", f"{BASE}/files/x.png?sig=1") == b"png bytes"
    assert [r.url.host for r in harness.requests] == ["api.example.test", "bucket.s3.test"]
    assert all("authorization" not in r.headers for r in harness.requests)


def test_follow_gives_up_at_its_timeout(kind: str) -> None:
    harness = Harness(kind, server_of_one_task({"status": "pending"}))
    with pytest.raises(TimeoutError):
        harness.collect("follow", TASK["id"], timeout=0)


def test_poll_rhythm_grows_to_its_ceiling_and_resets_on_change() -> None:
    rhythm = PollRhythm(base=0.5, ceiling=2.0)
    delays = [rhythm.next_delay("pending", 0) for _ in range(6)]
    assert delays == [0.5, 0.75, 1.125, 1.6875, 2.0, 2.0]
    assert rhythm.next_delay("processing", 10) == 0.5


# --- parity --------------------------------------------------------------------------------


def public_methods(cls: type) -> dict[str, Any]:
    return {
        name: member
        for name, member in vars(cls).items()
        if callable(member) and not name.startswith("_")
    }


def test_the_async_client_has_the_sync_clients_methods_and_signatures() -> None:
    sync, asynchronous = public_methods(Client), public_methods(AsyncClient)
    assert set(sync) == set(asynchronous)
    assert {
        "create",
        "get",
        "cancel",
        "credits",
        "list_tasks",
        "iter_tasks",
        "follow",
        "wait",
        "download",
        "run",
    } <= set(sync)
    for name, method in sync.items():
        twin = asynchronous[name]
        assert [p.name for p in inspect.signature(method).parameters.values()] == [
            p.name for p in inspect.signature(twin).parameters.values()
        ], name
        for param in inspect.signature(method).parameters.values():
            assert param.default == inspect.signature(twin).parameters[param.name].default
        assert inspect.iscoroutinefunction(twin) or inspect.isasyncgenfunction(twin), name
    assert [p for p in inspect.signature(Client).parameters] == [
        p for p in inspect.signature(AsyncClient).parameters
    ]
