"""The poll's read of one task as a raw DB-API statement: its SQL, compiled once from the
table (every column, so the task is the one `task_queue.get` returns), and the driver row
turned into a detached `Task`. Used by `task_read` (SQLite) and `pg_read` (PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from sqlalchemy import Table, bindparam, select
from sqlalchemy.engine import Dialect

from kreaserve.db.models import Task
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
