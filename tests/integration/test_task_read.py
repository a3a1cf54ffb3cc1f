"""The poll's raw read (kreaserve.db.task_read): the same task as `task_queue.get`, no
read transaction left open, a busy SQLite answered in a thread, and the same answer
bytes from the API whichever way the task was read."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import update

from kreaserve import ledger, task_queue
from kreaserve.api.app import create_app
from kreaserve.config import Settings
from kreaserve.db import Database, task_read, upgrade
from kreaserve.db.models import Task
from kreaserve.storage import LocalStorage
from tests.conftest import make_postgres_database, new_account

NEW = task_queue.NewTask(
    prompt="a lighthouse at dawn",
    size="16:9",
    quality="1K",
    seed=7,
    nsfw_check=True,
    callback_url=None,
)
#: Rows in each state a poll shows differently (None: as created).
STATES: dict[str, dict[str, object] | None] = {
    "pending": None,
    "processing, cancel asked": {"status": "processing", "progress": 40, "cancel_requested": True},
    "completed": {
        "status": "completed",
        "progress": 100,
        "result_keys": ["a/b.png", "a/c.png"],
        "results_expire_at": 4102444800.5,
        "engine_seconds": 1.25,
    },
    "failed": {"status": "failed", "error_code": "engine_error", "error_message": "it broke"},
}


def make_tasks(db: Database, account_id: int) -> dict[str, str]:
    ids = {}
    for name, values in STATES.items():
        task = task_queue.create(db, account_id, None, "default", NEW, 4500)
        if values:
            with db.transaction() as session:
                session.execute(update(Task).where(Task.id == task.id).values(**values))
        ids[name] = task.id
    return ids


@pytest.fixture
def reader(db: Database) -> Iterator[task_read.LoopRead]:
    read = task_read.loop_read(db.engine)
    yield read
    if isinstance(read, task_read.SQLiteTaskRead):
        read.close()


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[Database]:
    """A new, migrated PostgreSQL database for one test, dropped after it."""
    url, drop = make_postgres_database(admin_url)
    upgrade(url)
    db = Database(url)
    try:
        yield db
    finally:
        db.dispose()
        drop()


async def terminate_connections(admin_url: str, database: str | None) -> None:
    """End every server process of `database`, as a PostgreSQL restart does."""
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as admin:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        )


def test_the_loop_read_is_the_core_read(db: Database, reader) -> None:  # type: ignore[no-untyped-def]
    account_id, _ = new_account(db)
    other, _ = new_account(db, name="other")
    ids = make_tasks(db, account_id)
    columns = [column.key for column in Task.__table__.columns]

    async def read(account: int, task_id: str) -> Task | None | str:
        try:
            return await reader.get(account, task_id)
        finally:
            if not isinstance(reader, task_read.SQLiteTaskRead):
                await reader.aclose()

    for name, task_id in ids.items():
        core = task_queue.get(db, account_id, task_id)
        found = asyncio.run(read(account_id, task_id))
        assert isinstance(found, Task), name
        assert core is not None
        for column in columns:
            mine, theirs = getattr(found, column), getattr(core, column)
            assert (mine, type(mine)) == (theirs, type(theirs)), (name, column)
        # Another account's task is not found, like an unknown id.
        assert asyncio.run(read(other, task_id)) is None
    assert asyncio.run(read(account_id, "task-unified-0-nothere")) is None


def test_no_read_transaction_outlives_the_read(tmp_path: Path) -> None:
    """An open read would hold back checkpoints: the WAL would grow without end."""
    url = f"sqlite:///{tmp_path / 'wal.db'}"
    upgrade(url)
    db = Database(url)
    reader = task_read.loop_read(db.engine)
    try:
        account_id, _ = new_account(db)
        task_id = make_tasks(db, account_id)["pending"]
        assert isinstance(asyncio.run(reader.get(account_id, task_id)), Task)
        with sqlite3.connect(tmp_path / "wal.db") as other:
            busy, _, _ = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
        assert (tmp_path / "wal.db-wal").stat().st_size == 0
    finally:
        asyncio.run(reader.aclose())
        db.dispose()


def test_a_busy_database_is_read_in_a_thread(tmp_path: Path) -> None:
    """SQLite answering busy (here: another connection holds it in exclusive locking
    mode) never makes the event loop wait: the read says to read in a thread."""
    path = tmp_path / "busy.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    db = Database(url)
    reader = task_read.loop_read(db.engine)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        account_id, _ = new_account(db)
        task_id = make_tasks(db, account_id)["pending"]
        db.dispose()  # the pool's connections would keep the holder out
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("UPDATE tasks SET progress = 1")
        assert asyncio.run(reader.get(account_id, task_id)) == task_read.ON_THREAD
        holder.execute("COMMIT")
    finally:
        holder.close()
        asyncio.run(reader.aclose())
        db.dispose()


def test_the_poll_answers_the_same_bytes_either_way(db: Database, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=db.url, secret_key="read")
    app = create_app(settings, db=db, storage=LocalStorage(settings.images_dir))
    account_id, key = new_account(db)
    ids = make_tasks(db, account_id)
    services = app.state.services
    on_loop = services.task_read

    async def answers() -> dict[str, bytes]:
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=headers
        ) as client:
            got = {}
            for name, task_id in [*ids.items(), ("unknown", "task-unified-0-nothere")]:
                response = await client.get(f"/v1/tasks/{task_id}")
                got[name] = response.content
            return got

    services.estimates.current()  # one snapshot for both runs
    services.estimates.max_age = 3600.0
    try:
        first = asyncio.run(answers())
        services.task_read = task_read.NoLoopRead()
        second = asyncio.run(answers())
    finally:
        asyncio.run(on_loop.aclose())
    assert first == second
    assert b'"status":"pending"' in first["pending"]
    assert b"task_not_found" in first["unknown"]


@pytest.mark.postgres
def test_postgres_reads_again_on_a_new_connection_after_one_died(
    postgres_server: str, tmp_path: Path
) -> None:
    """A connection that died while idle (a server restart, an idle timeout) costs the
    read a retry on a new one, not an error; a server that cannot be reached at all
    answers ON_THREAD (the thread read then gives the API's 503)."""
    with postgres_database(postgres_server) as db:
        account_id, _ = new_account(db)
        task_id = make_tasks(db, account_id)["pending"]
        reader = task_read.loop_read(db.engine)
        assert isinstance(reader, task_read.PostgresTaskRead)

        async def run() -> list[Task | None | str]:
            got = [await reader.get(account_id, task_id)]
            await terminate_connections(postgres_server, db.engine.url.database)
            got.append(await reader.get(account_id, task_id))
            reader.conninfo = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"
            await reader.aclose()
            got.append(await reader.get(account_id, task_id))
            return got

        before, after, unreachable = asyncio.run(run())
    assert isinstance(before, Task) and isinstance(after, Task)
    assert after.id == task_id
    assert unreachable == task_read.ON_THREAD


@pytest.mark.postgres
def test_postgres_answers_concurrent_reads_in_fewer_statements(
    postgres_server: str,
) -> None:
    """Polls of the same moment share a statement (kreaserve.db.coalesce); each still gets
    its own account's task only, and the balances theirs."""
    sent: list[str] = []
    task_read.listeners.append(sent.append)
    try:
        with postgres_database(postgres_server) as db:
            account_id, _ = new_account(db, credits=10)
            other, _ = new_account(db, credits=3, name="other")
            ids = make_tasks(db, account_id)
            theirs = make_tasks(db, other)["pending"]
            reader = task_read.loop_read(db.engine)
            assert isinstance(reader, task_read.PostgresTaskRead)
            asks = [*((account_id, task_id) for task_id in ids.values())] * 5
            asks += [(account_id, theirs), (other, theirs), (account_id, "task-unified-0-nothere")]

            async def run() -> tuple[list[Task | None | str], list[object]]:
                try:
                    tasks = await asyncio.gather(*(reader.get(a, t) for a, t in asks))
                    balances = await asyncio.gather(
                        *(reader.balance(a) for a in (account_id, other, account_id, 999999))
                    )
                    return tasks, balances
                finally:
                    await reader.aclose()

            tasks, balances = asyncio.run(run())
    finally:
        task_read.listeners.remove(sent.append)
    for (account, task_id), found in zip(asks, tasks, strict=True):
        if task_id == theirs:
            assert (found.id if isinstance(found, Task) else found) == (
                theirs if account == other else None
            )
        elif task_id in ids.values():
            assert isinstance(found, Task) and found.id == task_id
        else:
            assert found is None
    units = ledger.to_units
    # Each account: its credits, and the reserved prices of its four tasks.
    assert balances[0] == balances[2] == (units(10), 4 * 4500)
    assert balances[1] == (units(3), 4 * 4500) and balances[3] is None
    assert len(sent) < len(asks) + len(balances), sent


@pytest.mark.postgres
def test_postgres_retries_on_a_new_connection_when_every_idle_one_died(
    postgres_server: str,
) -> None:
    """A server restart kills every idle connection at once: the retry after the first
    dead one must run on a new connection, not on the next dead idle one (it then gave
    up with ON_THREAD, and the poll fell to the thread read, which a pool of dead
    connections answers with a 503)."""
    with postgres_database(postgres_server) as db:
        account_id, _ = new_account(db)
        task_id = make_tasks(db, account_id)["pending"]
        reader = task_read.loop_read(db.engine)
        assert isinstance(reader, task_read.PostgresTaskRead)

        async def run() -> tuple[int, Task | None | str]:
            try:
                # Concurrent reads: two statements out at once, so two connections.
                await asyncio.gather(*(reader.get(account_id, task_id) for _ in range(8)))
                assert reader._pool is not None
                idle = len(reader._pool.idle)
                await terminate_connections(postgres_server, db.engine.url.database)
                return idle, await reader.get(account_id, task_id)
            finally:
                await reader.aclose()

        idle, after = asyncio.run(run())
    assert idle >= 2
    assert isinstance(after, Task) and after.id == task_id
