"""GET /v1/tasks/{id}/events over real HTTP: a real `kreaserve serve --no-worker` and a
separate `kreaserve worker` (the API may run anywhere), SQLite and PostgreSQL, read by
httpx streaming; the API is killed mid-task and started again on the same port, and the
client resumes with Last-Event-ID. One API and one worker per backend for the module."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from kreaserve import task_queue as queue
from kreaserve.db.models import Task
from tests.conftest import (
    POSTGRES_URL,
    Server,
    free_port,
    make_postgres_database,
    spawn,
    start_server,
    wait_for,
)
from tests.integration.test_generation import GOOD


@pytest.fixture(scope="module")
def fleet(
    backend: tuple[str, Path], weights_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    url, _ = backend
    tmp = tmp_path_factory.mktemp("events")
    drop = None
    if url.startswith("sqlite"):
        url = f"sqlite:///{tmp / 'events.db'}"
    else:
        url, drop = make_postgres_database(POSTGRES_URL)
    server = start_server(
        tmp, url, weights_cache, embedded_worker=False, separate_workers=1, port=free_port()
    )
    yield server
    server.stop()
    if drop:
        drop()


def read_events(response: httpx.Response, until: str | None = None) -> Iterator[dict[str, Any]]:
    """Parse an SSE body as it arrives: id, event and decoded data of each event."""
    fields: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in fields:
                fields["data"] = json.loads(fields["data"])
                yield fields
            fields = {}
            continue
        name, _, value = line.partition(": ")
        if name in ("id", "event", "data"):
            fields[name] = value


def restart_api(server: Server) -> None:
    """SIGKILL the API (no shutdown code runs) and start it again on its port and data."""
    server.api.stop(signal.SIGKILL)
    server.api = spawn(["serve", "--no-worker"], server.env, server.api.log)
    wait_for(f"{server.url}/healthz", server.api)


def open_streams(server: Server) -> float:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith("kreaserve_event_streams_open "):
            return float(line.split()[1])
    raise AssertionError("no kreaserve_event_streams_open in /metrics")


def test_a_stream_survives_an_api_restart_mid_task(fleet: Server) -> None:
    key = fleet.key()
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=fleet.url, headers=headers, timeout=60) as client:
        task = client.post("/v1/images/generations", json={**GOOD, "seed": 5}).json()
        before: list[dict[str, Any]] = []
        with client.stream("GET", f"/v1/tasks/{task['id']}/events") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            stream = read_events(response)
            for event in stream:
                before.append(event)
                if event["event"] == "progress":
                    break
            restart_api(fleet)  # the stream breaks under the client
            with pytest.raises(httpx.HTTPError):
                for event in stream:
                    before.append(event)  # what was sent before the kill, if anything
        last_id = before[-1]["id"]
        with client.stream(
            "GET", f"/v1/tasks/{task['id']}/events", headers={"Last-Event-ID": last_id}
        ) as response:
            after = list(read_events(response))
        final = client.get(f"/v1/tasks/{task['id']}").json()
        again = client.get(
            f"/v1/tasks/{task['id']}/events", headers={"Last-Event-ID": after[-1]["id"]}
        )
    assert before[0]["event"] in ("queued", "progress")
    assert [e["event"] for e in before].count("task") == 0
    ids = [int(e["id"]) for e in before + after]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
    assert after[-1]["event"] == "task" and after[-1]["data"] == final
    assert final["status"] == "completed", final
    assert all(e["event"] == "progress" for e in after[:-1])
    assert again.status_code == 204


def held_task(server: Server, account_id: int) -> str:
    """A task held by a worker that never finishes it (its stream stays open)."""
    db = server.database()
    while True:
        params = queue.NewTask("a held task", "1:1", "1K", 1, False, None)
        task = queue.create(db, account_id, None, "default", params, 1)
        with db.transaction() as session:
            held = session.execute(
                update(Task)
                .where(Task.id == task.id, Task.status == "pending")
                .values(status="processing", worker_id="ghost", lease_expires_at=time.time() + 3600)
            )
        if held.rowcount == 1:  # else the real worker was quicker: try another
            return task.id


def test_another_accounts_task_is_404_and_a_client_that_leaves_frees_its_stream(
    fleet: Server,
) -> None:
    account_id, key = fleet.account()
    owner = {"Authorization": f"Bearer {key}"}
    other = {"Authorization": f"Bearer {fleet.key()}"}
    path = f"/v1/tasks/{held_task(fleet, account_id)}/events"
    with httpx.Client(base_url=fleet.url, timeout=60) as client:
        refused = client.get(path, headers=other)
        assert refused.status_code == 404
        assert refused.json()["error"]["code"] == "task_not_found"
        baseline = open_streams(fleet)
        with client.stream("GET", path, headers=owner) as response:
            stream = read_events(response)  # kept: dropping it would close the response
            first = next(stream)
            assert (first["event"], first["data"]["phase"]) == ("progress", "encoding")
            assert open_streams(fleet) == baseline + 1
        # The client has closed the connection: the server notices and lets go.
        deadline = time.monotonic() + 10
        while open_streams(fleet) > baseline:
            assert time.monotonic() < deadline, "the stream outlived its client"
            time.sleep(0.1)
