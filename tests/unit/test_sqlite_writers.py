"""SQLite write transactions of one process take turns on a thread lock before they send
`BEGIN IMMEDIATE`, so a waiting writer is handed the lock at once instead of sleeping in
SQLite's busy handler (steps of up to 100 ms, which made create's p99 pass a second)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from sqlalchemy import text

from kreaserve.db import Database, upgrade


def _database(tmp_path: Path) -> Database:
    url = f"sqlite:///{tmp_path / 'writers.db'}"
    upgrade(url)
    return Database(url)


def _stack(thread: threading.Thread) -> list[str]:
    """The function names of a running thread, innermost first."""
    frame = sys._current_frames().get(thread.ident or 0)
    names = []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return names


def test_a_second_writer_waits_before_begin_not_in_sqlite(tmp_path: Path) -> None:
    db = _database(tmp_path)

    def second() -> None:
        with db.transaction() as session:
            session.execute(text("UPDATE accounts SET name = name"))

    try:
        with db.transaction() as session:
            session.execute(text("UPDATE accounts SET name = name"))  # holds the write lock
            other = threading.Thread(target=second, name="second")
            other.start()
            deadline = time.monotonic() + 10
            while "transaction" not in _stack(other) and time.monotonic() < deadline:
                time.sleep(0.005)  # until it is inside Database.transaction, waiting
            time.sleep(0.05)
            stack = _stack(other)
            # Waiting on the thread lock, not in SQLite's busy handler under BEGIN IMMEDIATE.
            assert stack[0] == "transaction", stack
            assert "_on_begin" not in stack
        other.join(10)
        assert not other.is_alive()
    finally:
        db.dispose()


def test_reads_do_not_wait_for_a_writer(tmp_path: Path) -> None:
    db = _database(tmp_path)
    try:
        with db.transaction() as session:
            session.execute(text("UPDATE accounts SET name = name"))
            answer: list[int] = []

            def read() -> None:
                with db.read() as reader:
                    answer.append(reader.execute(text("SELECT 1")).scalar_one())

            reader_thread = threading.Thread(target=read)
            reader_thread.start()
            reader_thread.join(10)
            assert answer == [1]
    finally:
        db.dispose()


def test_concurrent_writers_all_commit(tmp_path: Path) -> None:
    db = _database(tmp_path)
    try:
        with db.transaction() as session:
            session.execute(
                text(
                    "INSERT INTO accounts (name, user_group, balance_units, reserved_units, "
                    "created_at, tasks_in_flight) VALUES ('a', 'default', 0, 0, 0, 0)"
                )
            )

        def add() -> None:
            for _ in range(25):
                with db.transaction() as session:
                    session.execute(text("UPDATE accounts SET balance_units = balance_units + 1"))

        threads = [threading.Thread(target=add) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        with db.read() as session:
            assert session.execute(text("SELECT balance_units FROM accounts")).scalar_one() == 200
    finally:
        db.dispose()
