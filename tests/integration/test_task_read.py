"""The poll's raw read (kreaserve.db.task_read): the same task as `task_queue.get`, no
read transaction left open, a busy SQLite answered in a thread, and the same answer
bytes from the API whichever way the task was read."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from kreaserve import task_queue
from kreaserve.api.app import create_app
from kreaserve.config import Settings
from kreaserve.db import Database, task_read
from kreaserve.db.models import Task
from kreaserve.storage import LocalStorage
from tests.conftest import new_account

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
def reader(db: Database) -> Iterator[task_read.SQLiteTaskRead | task_read.NoLoopRead]:
    read = task_read.loop_read(db.engine)
    yield read
    read.close()


def test_the_loop_read_is_the_core_read(db: Database, reader) -> None:  # type: ignore[no-untyped-def]
    account_id, _ = new_account(db)
    other, _ = new_account(db, name="other")
    ids = make_tasks(db, account_id)
    columns = [column.key for column in Task.__table__.columns]
    for name, task_id in ids.items():
        core = task_queue.get(db, account_id, task_id)
        found = reader.get(account_id, task_id)
        if db.is_postgres:
            assert found == task_read.ON_THREAD
            continue
        assert isinstance(found, Task), name
        assert core is not None
        for column in columns:
            mine, theirs = getattr(found, column), getattr(core, column)
            assert (mine, type(mine)) == (theirs, type(theirs)), (name, column)
        # Another account's task is not found, like an unknown id.
        assert reader.get(other, task_id) is None
    assert reader.get(account_id, "task-unified-0-nothere") in (None, task_read.ON_THREAD)


def test_no_read_transaction_outlives_the_read(tmp_path: Path) -> None:
    """An open read would hold back checkpoints: the WAL would grow without end."""
    from kreaserve.db import upgrade

    url = f"sqlite:///{tmp_path / 'wal.db'}"
    upgrade(url)
    db = Database(url)
    reader = task_read.loop_read(db.engine)
    try:
        account_id, _ = new_account(db)
        task_id = make_tasks(db, account_id)["pending"]
        assert isinstance(reader.get(account_id, task_id), Task)
        with sqlite3.connect(tmp_path / "wal.db") as other:
            busy, _, _ = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
        assert (tmp_path / "wal.db-wal").stat().st_size == 0
    finally:
        reader.close()
        db.dispose()


def test_a_busy_database_is_read_in_a_thread(tmp_path: Path) -> None:
    """SQLite answering busy (here: another connection holds it in exclusive locking
    mode) never makes the event loop wait: the read says to read in a thread."""
    from kreaserve.db import upgrade

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
        assert reader.get(account_id, task_id) == task_read.ON_THREAD
        holder.execute("COMMIT")
    finally:
        holder.close()
        reader.close()
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
        on_loop.close()
    assert first == second
    assert b'"status":"pending"' in first["pending"]
    assert b"task_not_found" in first["unknown"]
