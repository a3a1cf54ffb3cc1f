"""Database connections: one engine factory for SQLite and PostgreSQL, and transactions.

`Database.transaction()` is a write transaction; `Database.read()` a read-only one. On
SQLite a write transaction starts with `BEGIN IMMEDIATE`, so concurrent writers queue on
the lock instead of failing on upgrade (as datasette does); a read starts with a plain
`BEGIN` and, in WAL mode, never waits for the write lock nor holds it. The writers of one
process also queue on a lock of their own before `BEGIN IMMEDIATE`: SQLite's busy handler
makes a waiting writer sleep in growing steps (up to 100 ms a try), so under sixteen
concurrent creates some waited for over a second while the lock was mostly free; a thread
lock hands it over at once. Writers in other processes still meet the busy handler.

PostgreSQL connections are not pinged on every checkout (`pool_pre_ping` costs a round trip
per request): a connection idle for longer than `PING_IDLE_SECONDS` is pinged before use
and replaced when dead, and every connection is recycled after `RECYCLE_SECONDS`. A
connection that dies under load still fails its request with a 503 (and SQLAlchemy then
discards the whole pool), which clients retry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Executable, Row, create_engine, event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from kreaserve.private import private_dir, private_file

#: A PostgreSQL connection idle this long is pinged before it is handed out.
PING_IDLE_SECONDS = 10.0
#: ... and none is used for longer than this (server-side idle timeouts, failovers).
RECYCLE_SECONDS = 1800

#: Set while a read-only transaction is being opened (SQLite then skips the write lock).
_read_only: ContextVar[bool] = ContextVar("kreaserve_read_only", default=False)
#: Set while a lone statement is being read (SQLite then sends no BEGIN at all).
_lone_read: ContextVar[bool] = ContextVar("kreaserve_lone_read", default=False)


def normalize_url(url: str) -> str:
    """Plain `postgresql://` (and `postgres://`) URLs use the psycopg 3 driver."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme) :]
    return url


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(
        url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=8
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        # Let us issue BEGIN ourselves (pysqlite's own is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        if not _lone_read.get():
            conn.exec_driver_sql("BEGIN" if _read_only.get() else "BEGIN IMMEDIATE")

    return engine


def _postgres_engine(url: str) -> Engine:
    engine = create_engine(url, pool_size=10, max_overflow=20, pool_recycle=RECYCLE_SECONDS)

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection, record):  # type: ignore[no-untyped-def]
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection, record, _proxy):  # type: ignore[no-untyped-def]
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_IDLE_SECONDS:
            return
        try:
            dbapi_connection.execute("SELECT 1")
            dbapi_connection.rollback()
        except Exception as error:
            # The pool replaces the connection and retries the checkout.
            raise exc.DisconnectionError(str(error)) from error

    return engine


def make_engine(url: str) -> Engine:
    """An engine with the right pragmas or pool for its backend."""
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            # Created 0600 before SQLite opens it; its WAL and shared memory inherit that.
            database = Path(parsed.database)
            if not database.parent.is_dir():
                private_dir(database.parent)
            for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
                if path == database or path.exists():
                    private_file(path)
        return _sqlite_engine(url)
    return _postgres_engine(url)


class Database:
    """An engine plus a session factory; `transaction()` is the unit of work."""

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self.engine = make_engine(self.url)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite: this process's writers take turns here rather than in the busy handler.
        # Reentrant, so a nested write in one thread fails as before (on SQLite's busy
        # timeout) rather than hanging.
        self._writers = None if self.is_postgres else threading.RLock()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error."""
        if self._writers is None:
            with self._sessions.begin() as session:
                yield session
            return
        with self._writers, self._sessions.begin() as session:
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session in one read-only transaction (on SQLite, without the write lock).

        The session is bound to a `reading()` connection, whose transaction it joins, so
        the two read paths open their transaction one way. Writing in it is a mistake: on
        SQLite a write would have to upgrade the lock and may fail with "database is
        locked" under concurrent writers."""
        with self.reading() as connection, self._sessions(bind=connection) as session:
            yield session

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A Core connection in one read-only transaction, committed on success: for the
        hot reads (a poll, the credits), where the ORM session and its identity map cost
        more than the statement does. `read()` builds its session on it."""
        token = _read_only.set(True)
        pending = True
        try:
            with self.engine.connect() as connection:
                connection.begin()  # BEGIN now, while the flag is set
                _read_only.reset(token)
                pending = False
                yield connection
                connection.commit()
        finally:
            if pending:
                _read_only.reset(token)

    def read_row(self, statement: Executable, params: dict[str, Any]) -> Row[Any] | None:
        """The first row of one read-only statement, or None: for the hottest read (a
        poll). On SQLite the statement runs alone, without BEGIN and COMMIT: a lone
        statement is a transaction of its own (in WAL mode it reads one snapshot and takes
        no write lock), and the two statements cost a poll about 15 % of its CPU.
        Elsewhere it is `reading()`'s one transaction."""
        if self._writers is None:
            with self.reading() as connection:
                return connection.execute(statement, params).first()
        token = _lone_read.set(True)
        try:
            with self.engine.connect() as connection:
                # The connection's autobegin runs the begin listener now, flag set; its
                # rollback on close is the driver's no-op (no transaction is open).
                return connection.execute(statement, params).first()
        finally:
            _lone_read.reset(token)

    def dispose(self) -> None:
        self.engine.dispose()
