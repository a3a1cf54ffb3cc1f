"""What an account holder reads about their credits, one read transaction each: the
standing (balance, reserved, available) and the credits charged by UTC day, model and tier."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select

from kreaserve import ledger
from kreaserve.db import Database
from kreaserve.db.models import LedgerEntry, Task


@dataclass(frozen=True)
class DayUsage:
    """The charges of one UTC day for one model and tier."""

    day: date
    model: str
    quality: str
    tasks: int
    units: int


def standing(db: Database, account_id: int) -> ledger.Balance:
    with db.reading() as connection:  # Core: no ORM session on this hot read
        return ledger.balance(connection, account_id)


def by_day(db: Database, account_id: int, first: date, last: date) -> list[DayUsage]:
    """Charges from `first` to `last` inclusive, by day, model and tier, in that order."""
    since = datetime.combine(first, datetime.min.time(), UTC).timestamp()
    until = datetime.combine(last + timedelta(days=1), datetime.min.time(), UTC).timestamp()
    with db.read() as session:
        rows = list(
            session.execute(
                select(LedgerEntry.created_at, Task.model, Task.quality, LedgerEntry.amount_units)
                .join(Task, Task.id == LedgerEntry.task_id)
                .where(
                    LedgerEntry.account_id == account_id,
                    LedgerEntry.kind == ledger.CHARGE,
                    LedgerEntry.created_at >= since,
                    LedgerEntry.created_at < until,
                )
            )
        )
    buckets: dict[tuple[date, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for at, model, quality, units in rows:
        bucket = buckets[(datetime.fromtimestamp(at, UTC).date(), model, quality)]
        bucket[0] += 1
        bucket[1] += units
    return [
        DayUsage(day, model, quality, count, units)
        for (day, model, quality), (count, units) in sorted(buckets.items())
    ]
