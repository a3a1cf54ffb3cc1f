"""An account's tasks, newest first, a page at a time (keyset pagination).

The cursor is the (created_at, id) of the last task of a page, so a page costs one index
range scan whatever its depth (an OFFSET would read every skipped row) and tasks created
while a client pages never shift or repeat rows. It is opaque to clients: base64url text.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass

from sqlalchemy import and_, or_, select

from kreaserve import contract
from kreaserve.db import Database
from kreaserve.db.models import Task

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
STATUSES = (
    contract.PENDING,
    contract.PROCESSING,
    contract.COMPLETED,
    contract.FAILED,
    contract.CANCELLED,
)
_CURSOR_VERSION = "1"


class BadCursor(ValueError):
    """A cursor this server did not make."""


@dataclass(frozen=True)
class Position:
    """Where a page ended: the last task's creation time and id."""

    created_at: float
    task_id: str

    def encode(self) -> str:
        text = f"{_CURSOR_VERSION}|{self.created_at!r}|{self.task_id}"
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> Position:
        if not cursor or len(cursor) > 200 or not cursor.isascii():
            raise BadCursor(cursor)
        try:
            text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
            version, created_at, task_id = text.split("|")
            moment = float(created_at)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise BadCursor(cursor) from None
        if (
            version != _CURSOR_VERSION
            or not math.isfinite(moment)
            or not contract.TASK_ID_RE.match(task_id)
        ):
            raise BadCursor(cursor)
        return cls(moment, task_id)


@dataclass(frozen=True)
class Page:
    tasks: list[Task]
    #: where the next page starts; None on the last page.
    next_position: Position | None


def list_tasks(
    db: Database,
    account_id: int,
    *,
    limit: int = DEFAULT_LIMIT,
    status: str | None = None,
    after: Position | None = None,
) -> Page:
    """One SELECT of at most `limit` + 1 rows (the extra row only says whether more exist),
    on ix_tasks_account_created, or ix_tasks_account_status_created with a status."""
    query = select(Task).where(Task.account_id == account_id)
    if status is not None:
        query = query.where(Task.status == status)
    if after is not None:
        query = query.where(
            or_(
                Task.created_at < after.created_at,
                and_(Task.created_at == after.created_at, Task.id < after.task_id),
            )
        )
    query = query.order_by(Task.created_at.desc(), Task.id.desc()).limit(limit + 1)
    with db.read() as session:
        rows = list(session.execute(query).scalars())
    if len(rows) <= limit:
        return Page(rows, None)
    last = rows[limit - 1]
    return Page(rows[:limit], Position(last.created_at, last.id))
