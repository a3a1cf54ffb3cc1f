"""GET /v1/tasks/{id}/events in-process (httpx ASGITransport, raw ASGI for a disconnect)
on a real SQLite file: the events a task's states make, their ids, resuming with
Last-Event-ID, bad input, a client that goes away, and the database cost per second."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from kreaserve import contract, phases
from kreaserve import task_queue as queue
from kreaserve.api.app import create_app
from kreaserve.api.routes import events
from kreaserve.auth import KeyCache
from kreaserve.config import Settings
from kreaserve.db import Database, upgrade
from kreaserve.storage import LocalStorage
from tests.conftest import new_account
from tests.unit.test_request_cost import AllowAll, Counter

BODY = {"model": "krea-2-turbo", "prompt": "a lighthouse at dawn", "size": "1:1"}
WORKER = "test-worker"


@pytest.fixture
def app_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Database]]:
    monkeypatch.setattr(events, "POLL_SECONDS", 0.02)
    url = f"sqlite:///{tmp_path / 'events.db'}"
    upgrade(url)
    settings = Settings(data_dir=tmp_path, database_url=url, secret_key="events")
    db = Database(url)
    app = create_app(settings, db=db, storage=LocalStorage(settings.images_dir))
    app.state.services.moderator = AllowAll()
    app.state.services.keys = KeyCache(db, ttl=3600)
    yield app, db
    db.dispose()


def parse(body: str) -> list[dict[str, Any]]:
    """The events of an SSE body: id, event and decoded data of each."""
    found = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            if name in ("id", "event", "data"):
                fields[name] = value
        if "data" in fields:
            fields["data"] = json.loads(fields["data"])
            found.append(fields)
    return found


async def stream_while(
    client: httpx.AsyncClient, path: str, steps: list[Callable[[], None]], **headers: str
) -> httpx.Response:
    """GET an events stream while `steps` change the task, each once the stream has shown
    the previous state (the transport hands the body over once the stream has ended)."""
    request = asyncio.create_task(client.get(path, headers=headers))
    for step in steps:
        await asyncio.sleep(0.1)
        await asyncio.to_thread(step)
    return await asyncio.wait_for(request, 10)


def client_for(app: Any, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://test",
        headers={"Authorization": f"Bearer {key}"},
    )


def lifecycle(db: Database, task_id: str) -> list[Callable[[], None]]:
    """The worker's writes: claim, a denoising step, the last step, storing, completed."""
    return [
        lambda: queue.claim(db, WORKER, 60),
        lambda: queue.renew(db, task_id, WORKER, 60, 33, phases.denoising(3, 8)),
        lambda: queue.renew(db, task_id, WORKER, 60, 88, phases.denoising(8, 8)),
        lambda: queue.renew(db, task_id, WORKER, 60, phase=phases.STORING),
        lambda: queue.complete(db, task_id, WORKER, ["k.png"], 3600, 1.0),
    ]


def test_a_task_streams_its_place_phases_and_then_itself(app_db: tuple[Any, Database]) -> None:
    app, db = app_db
    _, key = new_account(db)
    app.state.services.estimates.max_age = 0.0  # places read afresh (not once a second)

    async def run() -> tuple[httpx.Response, dict[str, Any], httpx.Response]:
        async with client_for(app, key) as client:
            ahead = (await client.post("/v1/images/generations", json=BODY)).json()
            task = (await client.post("/v1/images/generations", json=BODY)).json()
            steps = [lambda: queue.cancel(db, 1, ahead["id"]), *lifecycle(db, task["id"])]
            answer = await stream_while(client, f"/v1/tasks/{task['id']}/events", steps)
            final = await client.get(f"/v1/tasks/{task['id']}")
            again = await client.get(
                f"/v1/tasks/{task['id']}/events",
                headers={"Last-Event-ID": parse(answer.text)[-1]["id"]},
            )
            return answer, final.json(), again

    answer, final, again = asyncio.run(run())
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    got = parse(answer.text)
    names = [(e["event"], e["data"].get("position"), e["data"].get("phase")) for e in got]
    assert names == [
        ("queued", 2, None),
        ("queued", 1, None),
        ("progress", None, "encoding"),
        ("progress", None, "denoising 3/8"),
        ("progress", None, "decoding"),
        ("progress", None, "storing"),
        ("task", None, None),
    ], names
    ids = [int(e["id"]) for e in got]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert got[3]["data"]["progress"] == 33
    # The last event is the task object exactly as GET /v1/tasks/{id} answers it.
    assert got[-1]["data"] == final and final["status"] == contract.COMPLETED
    # A client that saw the end and reconnects is told there is nothing more.
    assert again.status_code == 204


def test_a_resumed_stream_gets_only_what_is_newer(app_db: tuple[Any, Database]) -> None:
    app, db = app_db
    _, key = new_account(db)

    async def run() -> list[httpx.Response]:
        async with client_for(app, key) as client:
            task = (await client.post("/v1/images/generations", json=BODY)).json()
            path = f"/v1/tasks/{task['id']}/events"
            steps = lifecycle(db, task["id"])
            await asyncio.to_thread(steps[0])  # claimed
            await asyncio.to_thread(steps[1])  # denoising 3/8
            seen = await stream_while(client, path, [steps[4]])
            return [
                seen,
                await client.get(path, headers={"Last-Event-ID": "not-an-id"}),
                await client.get(path, headers={"Last-Event-ID": "0"}),
            ]

    seen, garbage, zero = asyncio.run(run())
    first = parse(seen.text)
    assert [e["data"].get("phase") for e in first] == ["denoising 3/8", None]
    # An id that is not ours starts over, as 0 does: the end again, nothing else left.
    for answer in (garbage, zero):
        assert [e["event"] for e in parse(answer.text)] == ["task"]
        assert parse(answer.text)[0]["id"] == first[-1]["id"]


def test_resuming_after_a_phase_skips_it(app_db: tuple[Any, Database]) -> None:
    app, db = app_db
    _, key = new_account(db)

    async def run() -> tuple[str, httpx.Response]:
        async with client_for(app, key) as client:
            task = (await client.post("/v1/images/generations", json=BODY)).json()
            path = f"/v1/tasks/{task['id']}/events"
            steps = lifecycle(db, task["id"])
            for step in steps[:2]:
                await asyncio.to_thread(step)
            # The id a first connection got for "denoising 3/8", before the task moved on.
            probe = asyncio.create_task(client.get(path))
            await asyncio.sleep(0.1)
            await asyncio.to_thread(steps[4])
            last_seen = parse((await probe).text)[0]["id"]
            return last_seen, await client.get(path, headers={"Last-Event-ID": last_seen})

    last_seen, resumed = asyncio.run(run())
    got = parse(resumed.text)
    assert [e["event"] for e in got] == ["task"] and int(got[0]["id"]) > int(last_seen)


def test_bad_input_gets_the_error_shape(app_db: tuple[Any, Database]) -> None:
    app, db = app_db
    _, key = new_account(db)
    _, other_key = new_account(db, name="other")

    async def run() -> dict[str, httpx.Response]:
        async with client_for(app, key) as client, client_for(app, other_key) as other:
            task = (await client.post("/v1/images/generations", json=BODY)).json()
            return {
                "another account's": await other.get(f"/v1/tasks/{task['id']}/events"),
                "unknown": await client.get(
                    f"/v1/tasks/{contract.TASK_ID_PREFIX}1-deadbeef/events"
                ),
                "not an id": await client.get("/v1/tasks/nope/events"),
                "no key": await client.get(
                    f"/v1/tasks/{task['id']}/events", headers={"Authorization": ""}
                ),
            }

    answers = asyncio.run(run())
    expected = {
        "another account's": (404, "task_not_found"),
        "unknown": (404, "task_not_found"),
        "not an id": (400, "invalid_task_id"),
        "no key": (401, "missing_api_key"),
    }
    for name, (status, code) in expected.items():
        answer = answers[name]
        assert answer.status_code == status, (name, answer.text)
        assert answer.headers["content-type"].startswith("application/json"), name
        assert answer.json()["error"]["code"] == code, (name, answer.text)


def open_streams() -> float:
    return REGISTRY.get_sample_value("kreaserve_event_streams_open") or 0.0


def test_a_client_that_goes_away_frees_its_stream(app_db: tuple[Any, Database]) -> None:
    """Raw ASGI: the client disconnects after the first event; the generator stops."""
    app, db = app_db
    account_id, key = new_account(db)
    task = queue.create(
        db, account_id, None, "default", queue.NewTask("x", "1:1", "1K", 1, False, None), 1
    )
    before = open_streams()

    async def run() -> tuple[list[bytes], float]:
        first_event = asyncio.Event()
        gone = asyncio.Event()
        sent: list[bytes] = []

        async def receive() -> dict[str, Any]:
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                sent.append(message["body"])
                first_event.set()

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": f"/v1/tasks/{task.id}/events",
            "raw_path": f"/v1/tasks/{task.id}/events".encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"authorization", f"Bearer {key}".encode()), (b"host", b"test")],
            "client": ("127.0.0.1", 1),
            "server": ("test", 80),
            "state": {},
        }
        call = asyncio.create_task(app(scope, receive, send))
        await asyncio.wait_for(first_event.wait(), 10)
        during = open_streams()
        gone.set()
        await asyncio.wait_for(call, 10)  # the response ends: nothing is left running
        return sent, during

    sent, during = asyncio.run(run())
    assert b"event: queued" in b"".join(sent)
    assert during == before + 1
    assert open_streams() == before
    assert threading.active_count() < 50  # no thread left reading for it


def test_a_stream_costs_one_short_read_a_second(app_db: tuple[Any, Database]) -> None:
    """One read transaction of one statement per POLL_SECONDS, nothing written (the queue
    snapshot, shared by the process's streams and polls, is counted apart)."""
    app, db = app_db
    account_id, key = new_account(db)
    task = queue.create(
        db, account_id, None, "default", queue.NewTask("x", "1:1", "1K", 1, False, None), 1
    )
    queue.claim(db, WORKER, 60)
    app.state.services.estimates.max_age = 3600.0  # the snapshot: read once, not counted
    app.state.services.estimates.current()
    counter = Counter(db)

    async def run() -> tuple[httpx.Response, int]:
        async with client_for(app, key) as client:
            request = asyncio.create_task(client.get(f"/v1/tasks/{task.id}/events"))
            await asyncio.sleep(0.3)
            counter.start()
            await asyncio.sleep(1.0)
            cost = counter.stop()
            await asyncio.to_thread(queue.complete, db, task.id, WORKER, ["k"], 60, 1.0)
            answer = await asyncio.wait_for(request, 10)
            assert cost.row_writes == 0 and cost.transactions == cost.statements, cost.sql
            return answer, cost.transactions

    answer, reads = asyncio.run(run())
    assert answer.status_code == 200
    # POLL_SECONDS is 0.02 here: about 50 reads in the second, one statement each.
    assert 10 <= reads <= 1.0 / events.POLL_SECONDS + 2, reads


def test_a_quiet_stream_gets_keep_alive_comments(
    app_db: tuple[Any, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, db = app_db
    monkeypatch.setattr(events, "PING_SECONDS", 0.1)  # 15 s in production
    account_id, key = new_account(db)
    params = queue.NewTask("x", "1:1", "1K", 1, False, None)
    task = queue.create(db, account_id, None, "default", params, 1)
    queue.claim(db, WORKER, 60)

    async def run() -> httpx.Response:
        async with client_for(app, key) as client:
            done = lambda: queue.complete(db, task.id, WORKER, ["k"], 60, 1.0)  # noqa: E731
            return await stream_while(
                client, f"/v1/tasks/{task.id}/events", [lambda: None] * 5 + [done]
            )

    body = asyncio.run(run()).text
    comments = [line for line in body.splitlines() if line.startswith(":")]
    # Nothing changed for half a second: the only lines between the events are pings.
    assert len(comments) >= 2, body
    assert [e["event"] for e in parse(body)] == ["progress", "task"]
