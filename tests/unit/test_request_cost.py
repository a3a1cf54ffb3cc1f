"""The database work of one request on the hot paths (poll, create, credits), counted with
SQLAlchemy events on the app's own engine, so that a regression fails the suite.

The app runs in-process (httpx ASGITransport) on a real SQLite file (and PostgreSQL where
one is reachable); moderation is replaced by a stub that allows everything, since it
touches no database. Each figure is the total over a run of requests after one warm-up
request. The queue snapshot's clock is the test's, so its refresh (at most once a second
per process) is counted on its own.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from kreaserve import limits
from kreaserve.api.app import create_app
from kreaserve.auth import KeyCache
from kreaserve.config import Settings
from kreaserve.db import Database, task_read
from kreaserve.estimates import QueueEstimates
from kreaserve.moderation import Decision
from kreaserve.storage import LocalStorage
from tests.conftest import new_account

RUNS = 10
BODY = {"model": "krea-2-turbo", "prompt": "a lighthouse at dawn", "size": "16:9"}


@dataclass
class Cost:
    """What the engine saw: transactions begun, statements sent, rows written."""

    transactions: int = 0
    statements: int = 0
    row_writes: int = 0
    sql: list[str] = field(default_factory=list)
    #: the BEGIN statements sent (SQLite: BEGIN for reads, BEGIN IMMEDIATE for writes)
    begins: set[str] = field(default_factory=set)
    #: ORM flushes (the unit of work: several times the CPU of the statements it sends)
    flushes: int = 0
    #: statements sent straight to the driver, past SQLAlchemy (the poll's read)
    raw: int = 0

    def per_request(self, runs: int) -> tuple[float, float, float]:
        return (self.transactions / runs, self.statements / runs, self.row_writes / runs)


class Counter:
    """Counts the work of an engine between `start()` and `stop()`."""

    def __init__(self, db: Database) -> None:
        self.cost: Cost | None = None
        engine = db.engine
        event.listen(engine, "begin", self._begin)
        event.listen(engine, "after_cursor_execute", self._executed)
        event.listen(Session, "before_flush", self._flush)
        # The poll's raw read (kreaserve.db.task_read) passes no engine event.
        task_read.listeners.append(self._raw)

    def close(self) -> None:
        event.remove(Session, "before_flush", self._flush)
        task_read.listeners.remove(self._raw)

    def _raw(self, statement: str) -> None:
        """A lone statement sent to the driver: a transaction of its own, writing nothing."""
        if self.cost is not None:
            self.cost.transactions += 1
            self.cost.statements += 1
            self.cost.raw += 1
            self.cost.sql.append(statement.split("\n")[0][:80])

    def _flush(self, _session, _context, _instances) -> None:  # type: ignore[no-untyped-def]
        if self.cost is not None:
            self.cost.flushes += 1

    def _begin(self, _conn) -> None:  # type: ignore[no-untyped-def]
        if self.cost is not None:
            self.cost.transactions += 1

    def _executed(self, _conn, cursor, statement, _params, _context, _many) -> None:  # type: ignore[no-untyped-def]
        if self.cost is None:
            return
        if statement.strip().upper().startswith("BEGIN"):
            self.cost.begins.add(statement.strip().upper())
        if statement.strip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK")):
            return
        self.cost.statements += 1
        self.cost.sql.append(statement.split("\n")[0][:80])
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            # With RETURNING the driver's rowcount is not known yet: count it as one row.
            returning = "RETURNING" in statement.upper()
            self.cost.row_writes += 1 if returning else max(0, cursor.rowcount)

    def start(self) -> None:
        self.cost = Cost()

    def stop(self) -> Cost:
        cost, self.cost = self.cost, None
        assert cost is not None
        return cost


class AllowAll:
    """Moderation stand-in: these tests count database work only."""

    def warm(self) -> None:
        pass

    def check(self, prompt: str, *, strict: bool) -> Decision:
        return Decision(allowed=True, category=None, score=0.0, mode="basic", source="prompt")


@pytest.fixture(params=["sqlite", "postgres"])
def app_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Settings, Database]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'cost.db'}"
        drop = None
    else:
        from tests.conftest import make_postgres_database

        url, drop = make_postgres_database(request.getfixturevalue("postgres_server"))
    from kreaserve.db import upgrade

    upgrade(url)
    settings = Settings(
        data_dir=tmp_path,
        database_url=url,
        secret_key="cost",
        requests_per_minute=100_000,
        max_tasks_in_flight=100_000,
    )
    db = Database(url)
    yield settings, db
    db.dispose()
    if drop:
        drop()


def measure(settings: Settings, db: Database) -> dict[str, Cost]:
    """Cost of RUNS polls, creates and credits reads, after one warm-up of each; then of
    one poll once the queue snapshot is a second old."""
    app = create_app(settings, db=db, storage=LocalStorage(settings.images_dir))
    app.state.services.moderator = AllowAll()
    clock = [0.0]
    app.state.services.estimates = QueueEstimates(db, clock=lambda: clock[0])
    # Keys are read again every auth_cache_seconds (one statement); not within this test.
    app.state.services.keys = KeyCache(db, ttl=3600)
    _, key = new_account(db, credits=1000)
    counter = Counter(db)

    async def run() -> dict[str, Cost]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers={"Authorization": f"Bearer {key}"}
        ) as client:
            task = (await client.post("/v1/images/generations", json=BODY)).json()
            keys = itertools.count()
            requests = {
                "poll": lambda: client.get(f"/v1/tasks/{task['id']}"),
                "create": lambda: client.post("/v1/images/generations", json=BODY),
                "create, new Idempotency-Key": lambda: client.post(
                    "/v1/images/generations",
                    json=BODY,
                    headers={"Idempotency-Key": f"key-{next(keys)}"},
                ),
                "create, replayed Idempotency-Key": lambda: client.post(
                    "/v1/images/generations", json=BODY, headers={"Idempotency-Key": "again"}
                ),
                "credits": lambda: client.get("/v1/credits"),
            }
            costs = {}

            async def measured(send, runs: int, before=lambda: None) -> Cost:  # type: ignore[no-untyped-def]
                """The cost of `runs` requests. A new minute takes a new rate lease (one
                upsert, limits.lease): a measurement that crossed into one is taken again."""
                while True:
                    minute = limits.window_of(time.time())
                    before()
                    counter.start()
                    for _ in range(runs):
                        response = await send()
                        assert response.status_code == 200, response.text
                    cost = counter.stop()
                    if limits.window_of(time.time()) == minute:
                        return cost

            for name, send in requests.items():
                assert (await send()).status_code == 200
                costs[name] = await measured(send, RUNS)

            def snapshot_ages() -> None:
                clock[0] += 1.0

            costs["poll, snapshot a second old"] = await measured(
                requests["poll"], 1, before=snapshot_ages
            )
            return costs

    try:
        return asyncio.run(run())
    finally:
        counter.close()


def test_hot_paths_cost_what_they_should(app_db: tuple[Settings, Database]) -> None:
    costs = measure(*app_db)
    for name, cost in costs.items():
        print(
            name,
            "transactions/statements/row writes per request:",
            cost.per_request(RUNS),
            cost.sql[:12],
        )
    poll, create, credits = costs["poll"], costs["create"], costs["credits"]
    # A poll writes nothing: one read transaction of one statement, sent straight to the
    # driver on the event loop (kreaserve.db.task_read, kreaserve.db.pg_read).
    assert (poll.transactions, poll.statements, poll.row_writes) == (RUNS, RUNS, 0), poll.sql
    assert poll.raw == RUNS, poll.sql
    # Once a second, one of them also reads the queue: one more read of five statements.
    refresh = costs["poll, snapshot a second old"]
    assert (refresh.transactions, refresh.statements, refresh.row_writes) == (2, 6, 0)
    if app_db[1].engine.dialect.name == "sqlite":  # reads never take the write lock
        # A poll's lone statement is a transaction of its own: no BEGIN, no COMMIT.
        assert poll.begins == set()
        assert credits.begins == set()
        assert create.begins == {"BEGIN IMMEDIATE"}
    # A create: one transaction, three statements (reserve + limits, ledger, task), three
    # row writes.
    assert (create.transactions, create.statements, create.row_writes) == (
        RUNS,
        3 * RUNS,
        3 * RUNS,
    ), create.sql
    # An Idempotency-Key adds one statement and one row write to the same transaction;
    # a replay of a key is one transaction of two statements (the upsert, whose RETURNING
    # the counter counts as a write though it changes nothing, and the read of the task).
    # ... sent as Core statements: the ORM's unit of work cost ~3 ms of CPU per create,
    # several times the statements themselves (issue 12).
    assert create.flushes == 0, create.flushes
    keyed = costs["create, new Idempotency-Key"]
    assert (keyed.transactions, keyed.statements, keyed.row_writes) == (
        RUNS,
        4 * RUNS,
        4 * RUNS,
    ), keyed.sql
    replayed = costs["create, replayed Idempotency-Key"]
    assert (replayed.transactions, replayed.statements, replayed.row_writes) == (
        RUNS,
        2 * RUNS,
        RUNS,
    ), replayed.sql
    # Credits: one read, sent to the driver on the event loop as the poll's is.
    assert (credits.transactions, credits.statements, credits.row_writes) == (RUNS, RUNS, 0), (
        credits.sql
    )
    assert credits.raw == RUNS, credits.sql


def test_the_poll_and_credits_skip_fastapis_request_handler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The poll and the credits are DirectRoutes (kreaserve.api.direct): FastAPI's handler
    (its parameter solving, two exit stacks per request) cost a poll a fifth of its CPU.
    They still answer with the contract's errors, and stay in the OpenAPI document."""
    import fastapi.routing

    from kreaserve.db import upgrade

    url = f"sqlite:///{tmp_path / 'direct.db'}"
    upgrade(url)
    db = Database(url)
    settings = Settings(data_dir=tmp_path, database_url=url, secret_key="direct")
    app = create_app(settings, db=db, storage=LocalStorage(settings.images_dir))
    _, key = new_account(db)

    async def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("FastAPI's request handler ran")

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers={"Authorization": f"Bearer {key}"}
        ) as client:
            task = (await client.post("/v1/images/generations", json=BODY)).json()
            monkeypatch.setattr(fastapi.routing, "solve_dependencies", refuse)
            return [
                await client.get(f"/v1/tasks/{task['id']}"),
                await client.get("/v1/tasks/task-unified-0-unknown"),
                await client.get("/v1/tasks/nope"),
                await client.get("/v1/tasks/x", headers={"Authorization": "Bearer wrong"}),
                await client.get("/v1/credits"),
                await client.get("/v1/usage"),  # a FastAPI route: the handler runs
            ]

    app.state.services.moderator = AllowAll()
    try:
        poll, unknown, malformed, unauthorized, credits, used = asyncio.run(run())
    finally:
        db.dispose()
    assert poll.status_code == 200, poll.text
    assert poll.json()["status"] == "pending"
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "task_not_found")
    assert (malformed.status_code, malformed.json()["error"]["code"]) == (400, "invalid_task_id")
    assert (unauthorized.status_code, unauthorized.json()["error"]["code"]) == (
        401,
        "invalid_api_key",
    )
    assert credits.status_code == 200, credits.text
    assert credits.json()["object"] == "credit_balance"
    assert credits.json()["reserved"] == 0.45  # the task's price, read on the loop
    assert used.status_code == 500
    assert {"/v1/tasks/{task_id}", "/v1/credits"} <= set(app.openapi()["paths"])
