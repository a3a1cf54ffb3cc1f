"""The reads made on the event loop as raw DB-API statements (the poll's task, the
credits' balance): their SQL, compiled once from the tables (a task's every column, so it
is the one `task_queue.get` returns), the driver row turned into a detached `Task`, and
`LoopReads`, the two reads over a backend's one-row read (`task_read` for SQLite,
`pg_read` for PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from sqlalchemy import Table, bindparam, select
from sqlalchemy.engine import Dialect

from kreaserve.db.models import Account, Task
from kreaserve.db.rows import detached

#: A loop read's answer when this read must be made in a thread instead.
ON_THREAD: Final = "on_thread"

#: Called with the SQL of each statement sent by a loop read (tests count a poll's).
listeners: list[Callable[[str], None]] = []


def task_statement(dialect: Dialect) -> str:
    """SELECT every column of the task, with `task_id` and `account_id` parameters in
    `dialect`'s style (`:task_id` named, `%(task_id)s` pyformat)."""
    table: Table = Task.__table__  # type: ignore[assignment]
    statement = select(table).where(
        table.c.id == bindparam("task_id"), table.c.account_id == bindparam("account_id")
    )
    return str(statement.compile(dialect=dialect))


def row_converter(dialect: Dialect) -> Callable[[Sequence[Any]], Task]:
    """A driver row (the statement's columns, in order) -> a detached `Task`. On SQLite
    through each column type's result processor (booleans, JSON); psycopg returns these
    columns' Python types itself."""
    table: Table = Task.__table__  # type: ignore[assignment]
    names = [column.key for column in table.columns]
    processors = []
    if dialect.name == "sqlite":
        processors = [
            (index, processor)
            for index, column in enumerate(table.columns)
            if (processor := column.type.dialect_impl(dialect).result_processor(dialect, None))
        ]

    def convert(row: Sequence[Any]) -> Task:
        values = list(row)
        for index, processor in processors:
            values[index] = processor(values[index])
        return detached(Task, dict(zip(names, values, strict=True)))

    return convert


def balance_statement(dialect: Dialect) -> str:
    """SELECT an account's balance and reservations (`ledger.balance`'s columns)."""
    table: Table = Account.__table__  # type: ignore[assignment]
    statement = select(table.c.balance_units, table.c.reserved_units).where(
        table.c.id == bindparam("account_id")
    )
    return str(statement.compile(dialect=dialect))


class LoopReads:
    """The reads, over `_row` (a backend's one-row read: the row, None, or `ON_THREAD`
    when the caller must read in a thread instead)."""

    def __init__(self, dialect: Dialect) -> None:
        self.sql = task_statement(dialect)
        self.balance_sql = balance_statement(dialect)
        self.convert = row_converter(dialect)

    async def _row(self, sql: str, params: dict[str, Any]) -> Sequence[Any] | None | str:
        raise NotImplementedError

    async def get(self, account_id: int, task_id: str) -> Task | None | str:
        """The account's task, None, or `ON_THREAD`."""
        row = await self._row(self.sql, {"task_id": task_id, "account_id": account_id})
        return row if row is None or isinstance(row, str) else self.convert(row)

    async def balance(self, account_id: int) -> tuple[int, int] | None | str:
        """(balance_units, reserved_units) of the account, None, or `ON_THREAD`."""
        row = await self._row(self.balance_sql, {"account_id": account_id})
        if row is None or isinstance(row, str):
            return row
        return int(row[0]), int(row[1])
