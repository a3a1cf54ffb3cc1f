"""PostgreSQL LISTEN/NOTIFY wake-ups (kreaserve/db/pg_listen.py, migration 0011): work
committed by another connection wakes this process's idle waiters at once, so they can
back off to their ceiling; a listener that loses its connection keeps them at the base
interval until it is back, and is never the worker's death."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from kreaserve import contract, ledger, task_queue, wakeups
from kreaserve.config import Settings
from kreaserve.db import Database, pg_listen, upgrade
from kreaserve.db.models import Task
from kreaserve.storage import LocalStorage
from kreaserve.worker import Worker
from tests.conftest import make_postgres_database, new_account
from tests.unit.fake_engine import FakeEngine, wait_for

PRICE = ledger.to_units(0.45)
pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def database_url(postgres_server: str) -> Iterator[str]:
    """One PostgreSQL database for the module (conftest's `db` opens it per test)."""
    url, drop = make_postgres_database(postgres_server)
    upgrade(url)
    yield url
    drop()


@pytest.fixture
def template(db: Database) -> str:
    """A task of this test's own account: the row `insert_elsewhere` copies."""
    account_id, _ = new_account(db, name=f"t{secrets.token_hex(3)}")
    params = task_queue.NewTask(
        prompt="a fox", size="1:1", quality="1K", seed=5, nsfw_check=False, callback_url=None
    )
    return task_queue.create(db, account_id, None, "default", params, PRICE).id


def status(db: Database, task_id: str) -> str:
    with db.transaction() as session:
        task = session.get(Task, task_id)
        assert task is not None
        return task.status


def insert_elsewhere(url: str, template: str) -> str:
    """A copy of the template task, pending, inserted by another connection: no
    in-process `wakeups.notify` happens, only the database's NOTIFY can wake anyone."""
    new_id = f"task_{secrets.token_hex(8)}"
    with psycopg.connect(url, autocommit=True) as connection:
        cursor = connection.execute("SELECT * FROM tasks WHERE id = %s", (template,))
        assert cursor.description is not None
        columns = [column.name for column in cursor.description]
        row = dict(zip(columns, cursor.fetchone() or (), strict=True))
        row.update(id=new_id, status=contract.PENDING)
        connection.execute(
            f"INSERT INTO tasks ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(row))})",
            list(row.values()),
        )
    return new_id


@pytest.fixture
def listening(db: Database) -> Iterator[pg_listen.Listener]:
    """This process's listener of the test database, connected."""
    key, owner = pg_listen.source(db), object()
    pg_listen.acquire(key, owner)
    listener = pg_listen._listeners[key][0]
    wait_for(listener.connected.is_set, 10, "the listener to connect")
    yield listener
    started = time.monotonic()
    pg_listen.release(key, owner)
    assert not listener._thread.is_alive(), "the listener did not stop"
    assert time.monotonic() - started < 3


def woken_within(idle: wakeups.Idle, insert: object) -> float:
    """Seconds from `insert()` (after an empty wait grew the delay) to the waiter's wake."""
    idle._delay = idle.ceiling
    started = time.monotonic()
    insert()  # type: ignore[operator]
    assert idle.wait(), "the wait ran out instead of being woken"
    return time.monotonic() - started


def test_a_task_inserted_by_another_connection_wakes_the_waiter(
    database_url: str, db: Database, template: str, listening: pg_listen.Listener
) -> None:
    idle = wakeups.Idle(wakeups.TASKS, 0.05, 5.0, remote=listening.conninfo)
    assert idle.ceiling == 5.0  # the listener is up: the ceiling applies
    assert woken_within(idle, lambda: insert_elsewhere(database_url, template)) < 2.5


def test_a_task_back_to_pending_wakes_the_waiter_and_a_claim_does_not(
    database_url: str, db: Database, template: str, listening: pg_listen.Listener
) -> None:
    idle = wakeups.Idle(wakeups.TASKS, 0.05, 5.0, remote=listening.conninfo)
    task_id = insert_elsewhere(database_url, template)
    time.sleep(0.5)
    idle._event.clear()  # the insert's own wake-up

    def set_status(status: str) -> None:
        with psycopg.connect(database_url, autocommit=True) as connection:
            connection.execute("UPDATE tasks SET status = %s WHERE id = %s", (status, task_id))

    set_status(contract.PROCESSING)  # a claim: no wake-up
    idle._delay = 0.8
    assert not idle.wait()
    assert woken_within(idle, lambda: set_status(contract.PENDING)) < 2.5


def test_a_callback_delivery_inserted_by_another_connection_wakes_the_sender(
    database_url: str, db: Database, template: str, listening: pg_listen.Listener
) -> None:
    idle = wakeups.Idle(wakeups.CALLBACKS, 0.05, 5.0, remote=listening.conninfo)

    def enqueue() -> None:
        with psycopg.connect(database_url, autocommit=True) as connection:
            connection.execute(
                "INSERT INTO callback_deliveries (task_id, account_id, url, webhook_id, status,"
                " attempts, next_attempt_at, created_at) SELECT id, account_id, "
                "'https://example.com/hook', %s, 'pending', 0, 0, 0 FROM tasks WHERE id = %s",
                (secrets.token_hex(8), template),
            )

    assert woken_within(idle, enqueue) < 2.5


def test_a_killed_listener_connection_falls_back_to_the_base_and_reconnects(
    database_url: str,
    db: Database,
    template: str,
    listening: pg_listen.Listener,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    idle = wakeups.Idle(wakeups.TASKS, 0.05, 5.0, remote=listening.conninfo)
    seen: list[tuple[bool, float]] = []
    real = wakeups.set_remote

    def recording(source: str, connected: bool) -> None:
        real(source, connected)
        seen.append((connected, idle.ceiling))

    monkeypatch.setattr(wakeups, "set_remote", recording)
    caplog.set_level(logging.WARNING, "kreaserve.db")
    for outage in (1, 2):  # two outages: one line each, and it comes back from both
        with psycopg.connect(database_url, autocommit=True) as connection:
            killed = connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN%%'"
            ).fetchall()
        assert killed == [(True,)]
        wait_for(lambda: len(seen) >= 2 * outage, 15, "the listener to reconnect")  # noqa: B023
    assert seen == [(False, 0.05), (True, 5.0)] * 2  # while down, the wait is the base
    lost = [r for r in caplog.records if "has no database connection" in r.getMessage()]
    assert len(lost) == 2
    assert woken_within(idle, lambda: insert_elsewhere(database_url, template)) < 2.5


def test_the_listener_retries_quietly_while_the_database_is_unreachable(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No server on the port: it keeps trying (backoff), logs one line, stops at once."""
    monkeypatch.setattr(pg_listen, "RETRY_SECONDS", (0.05, 0.2))
    caplog.set_level(logging.WARNING, "kreaserve.db")
    listener = pg_listen.Listener("postgresql://postgres@127.0.0.1:1/none?connect_timeout=1")
    listener.start()
    time.sleep(1.5)
    started = time.monotonic()
    listener.stop()
    assert not listener._thread.is_alive() and time.monotonic() - started < 3
    assert not listener.connected.is_set()
    assert len([r for r in caplog.records if "has no database connection" in r.getMessage()]) == 1


def test_an_idle_worker_on_postgres_polls_rarely_and_wakes_on_a_remote_task(
    database_url: str,
    db: Database,
    template: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Base 0.2 s, ceiling 2 s: the old worker kept the base on PostgreSQL (~20 claims in
    4 idle seconds); now ~5 (0.2 + 0.4 + 0.8 + 1.6 + 2), and a task inserted by another
    connection is still claimed at once."""
    calls: list[float] = []
    real = task_queue.claim_batch

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(time.monotonic())
        return real(*args, **kwargs)

    monkeypatch.setattr(task_queue, "claim_batch", counting)
    with psycopg.connect(database_url, autocommit=True) as connection:  # only the new task waits
        connection.execute("UPDATE tasks SET status = 'cancelled' WHERE status = 'pending'")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path,
        worker_poll_seconds=0.2,
        worker_idle_poll_max_seconds=2.0,
        batch_size=1,
        batch_wait_ms=0,
    )
    worker = Worker(settings, db, LocalStorage(tmp_path / "images"), engine=FakeEngine())
    worker.start()
    try:
        wait_for(lambda: len(calls) >= 1, 15, "the first claim")
        time.sleep(4)
        idle_claims = len(calls)
        assert 2 <= idle_claims <= 9, f"{idle_claims} claims in 4 idle seconds"
        created = time.monotonic()
        task_id = insert_elsewhere(database_url, template)
        wait_for(lambda: status(db, task_id) != contract.PENDING, 10, "the claim")
        assert time.monotonic() - created < 1.5
    finally:
        worker.stop()
