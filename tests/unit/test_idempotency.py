"""Idempotency-Key on POST /v1/images/generations, in-process (httpx ASGITransport) on a real
SQLite file: replays, a different body, per-account keys, bad headers, a day's expiry and
its purge, a failed create that remembers nothing, and the SDK resending a create whose
answer was lost. The race across two API processes on PostgreSQL is
tests/integration/test_idempotency_race.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from kreaserve import idempotency, ledger
from kreaserve.api.app import create_app
from kreaserve.client import AsyncClient, Retry
from kreaserve.config import Settings
from kreaserve.db import Database, upgrade
from kreaserve.db.models import IdempotencyKey, LedgerEntry, Task
from kreaserve.maintenance import Maintenance
from kreaserve.storage import LocalStorage
from tests.conftest import new_account
from tests.unit.test_request_cost import AllowAll

BODY = {"model": "krea-2-turbo", "prompt": "a lighthouse at dawn", "size": "16:9"}
URL = "/v1/images/generations"


class App:
    """The app over one SQLite file; `call` sends one request as `key`."""

    def __init__(self, tmp: Path) -> None:
        url = f"sqlite:///{tmp / 'idem.db'}"
        upgrade(url)
        self.settings = Settings(
            data_dir=tmp, database_url=url, secret_key="idem", requests_per_minute=10**6
        )
        self.db = Database(url)
        self.storage = LocalStorage(self.settings.images_dir)
        self.app = create_app(self.settings, db=self.db, storage=self.storage)
        self.app.state.services.moderator = AllowAll()

    def transport(self) -> httpx.AsyncBaseTransport:
        return httpx.ASGITransport(app=self.app)

    def call(self, key: str, idem: str | None, body: Any = BODY) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"}
        if idem is not None:
            headers[idempotency.HEADER] = idem

        async def send() -> httpx.Response:
            async with httpx.AsyncClient(transport=self.transport(), base_url="http://t") as c:
                return await c.post(URL, json=body, headers=headers)

        return asyncio.run(send())

    def count(self, model: Any, *where: Any) -> int:
        with self.db.read() as session:
            return session.execute(select(func.count()).select_from(model).where(*where)).one()[0]

    def reservations(self, account_id: int) -> int:
        return self.count(
            LedgerEntry, LedgerEntry.account_id == account_id, LedgerEntry.kind == "reserve"
        )


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    target = App(tmp_path_factory.mktemp("idem"))
    yield target
    target.db.dispose()


def test_the_same_key_and_body_answer_the_same_task_charged_once(app: App) -> None:
    account, key = new_account(app.db, credits=10)
    first = app.call(key, "order-1")
    again = app.call(key, "order-1", {**BODY})
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert again.json()["id"] == first.json()["id"]
    # The same answer (the estimate is live, so left out of the comparison).
    assert {**again.json(), "task_info": None} == {**first.json(), "task_info": None}
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert app.count(Task, Task.account_id == account) == 1
    assert app.reservations(account) == 1
    # Key order and spacing of the body do not matter; the validated fields do.
    reordered = app.call(key, "order-1", dict(reversed(list(BODY.items()))))
    assert reordered.json()["id"] == first.json()["id"]


def test_the_same_key_with_another_body_is_a_409(app: App) -> None:
    account, key = new_account(app.db, credits=10)
    first = app.call(key, "order-2")
    other = app.call(key, "order-2", {**BODY, "prompt": "another prompt"})
    assert other.status_code == 409, other.text
    error = other.json()["error"]
    assert error["code"] == "idempotency_key_reused"
    assert error["param"] == idempotency.HEADER and error["type"] == "invalid_request_error"
    assert app.count(Task, Task.account_id == account) == 1
    assert app.call(key, "order-2").json()["id"] == first.json()["id"]


def test_keys_are_per_account(app: App) -> None:
    one, key_one = new_account(app.db, credits=10)
    two, key_two = new_account(app.db, credits=10)
    a = app.call(key_one, "shared-key").json()
    b = app.call(key_two, "shared-key", {**BODY, "prompt": "other"}).json()
    assert a["id"] != b["id"]
    assert app.reservations(one) == app.reservations(two) == 1


@pytest.mark.parametrize("value", ["", "   ", "k" * 256])
def test_an_empty_or_too_long_key_is_a_400_naming_the_header(app: App, value: str) -> None:
    account, key = new_account(app.db, credits=10)
    answer = app.call(key, value)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "invalid_idempotency_key"
    assert answer.json()["error"]["param"] == idempotency.HEADER
    assert app.count(Task, Task.account_id == account) == 0


def test_a_key_of_255_characters_is_accepted(app: App) -> None:
    _, key = new_account(app.db, credits=10)
    first = app.call(key, "k" * 255)
    assert first.status_code == 200, first.text
    assert app.call(key, "k" * 255).json()["id"] == first.json()["id"]


def test_a_key_past_its_day_creates_a_new_task_and_maintenance_purges_it(app: App) -> None:
    account, key = new_account(app.db, credits=10)
    first = app.call(key, "old-key").json()
    app.call(key, "fresh-key")
    day_ago = time.time() - idempotency.TTL_SECONDS - 1
    with app.db.transaction() as session:
        session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key == "old-key", IdempotencyKey.account_id == account)
            .values(created_at=day_ago)
        )
    second = app.call(key, "old-key", {**BODY, "prompt": "a new body is fine too"})
    assert second.status_code == 200 and second.json()["id"] != first["id"]
    assert (
        app.call(key, "old-key", {**BODY, "prompt": "a new body is fine too"}).json()["id"]
        == second.json()["id"]
    )
    with app.db.transaction() as session:  # age it again, for maintenance to purge
        session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key == "old-key", IdempotencyKey.account_id == account)
            .values(created_at=day_ago)
        )
    maintenance = Maintenance(app.settings, app.db, app.storage)
    maintenance.start()
    try:
        deadline = time.monotonic() + 10
        while app.count(IdempotencyKey, IdempotencyKey.key == "old-key"):
            assert time.monotonic() < deadline, "maintenance did not purge the old key"
            time.sleep(0.05)
    finally:
        maintenance.stop()
    assert app.count(IdempotencyKey, IdempotencyKey.key == "fresh-key") == 1


def test_a_refused_create_does_not_remember_its_key(app: App) -> None:
    account, key = new_account(app.db, credits=0)
    refused = app.call(key, "after-top-up")
    assert refused.status_code == 402, refused.text
    assert app.count(IdempotencyKey, IdempotencyKey.account_id == account) == 0
    with app.db.transaction() as session:
        ledger.grant(session, account, ledger.to_units(10), "top-up")
    created = app.call(key, "after-top-up")
    assert created.status_code == 200, created.text
    assert "Idempotent-Replayed" not in created.headers


class LoseFirstAnswer(httpx.AsyncBaseTransport):
    """Passes each request to the app, but drops the first create's answer as a cut
    connection would: the server did the work, the client never saw it."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner, self.creates = inner, 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST":
            self.creates += 1
            if self.creates == 1:
                await response.aread()
                raise httpx.RemoteProtocolError("server disconnected without a response")
        return response


def test_the_sdk_resends_a_create_whose_answer_was_lost_and_is_charged_once(app: App) -> None:
    account, key = new_account(app.db, credits=10)
    transport = LoseFirstAnswer(app.transport())

    async def create() -> str:
        client = AsyncClient("http://t", key, transport=transport, retry=Retry(backoff=0.01))
        try:
            return (await client.create(BODY["prompt"], size="16:9")).id
        finally:
            await client.close()

    task_id = asyncio.run(create())
    assert transport.creates == 2
    assert app.count(Task, Task.account_id == account) == 1
    assert app.reservations(account) == 1
    with app.db.read() as session:
        assert session.get(Task, task_id) is not None
