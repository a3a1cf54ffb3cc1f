"""Credits: grant, reserve, charge and release, always balanced and concurrency-safe.

Each movement is one conditional UPDATE of the account row plus one append to the
ledger, inside the caller's transaction. The UPDATE's own WHERE clause decides whether
a reservation fits, so two concurrent creates cannot both spend the last credit, on
SQLite (one writer at a time) and on PostgreSQL (row locks) alike.

Invariants: balance = sum(grant) + sum(adjust) - sum(charge); reserved = sum(reserve) - sum(charge)
- sum(release); 0 <= reserved <= balance; tasks_in_flight = count(reserve) - count(charge)
- count(release), the account's pending and processing tasks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.orm import Session

from kreaserve.db.models import Account, LedgerEntry
from kreaserve.db.rows import changed_rows

#: One credit is this many units; prices like 0.45 are exact integers (4500).
UNITS_PER_CREDIT = 10_000

GRANT, ADJUST, RESERVE, CHARGE, RELEASE = "grant", "adjust", "reserve", "charge", "release"


def to_units(credits: float | str | Decimal) -> int:
    """Credits (as typed by a person) to integer units, rounded half up."""
    value = Decimal(str(credits)) * UNITS_PER_CREDIT
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def to_credits(units: int) -> float:
    """Integer units to the credits a response shows."""
    return round(units / UNITS_PER_CREDIT, 4)


@dataclass(frozen=True)
class Balance:
    """An account's standing, in units."""

    balance_units: int
    reserved_units: int

    @property
    def available_units(self) -> int:
        return self.balance_units - self.reserved_units


def _append(
    session: Session,
    account_id: int,
    kind: str,
    units: int,
    task_id: str | None = None,
    note: str | None = None,
) -> None:
    session.add(
        LedgerEntry(
            account_id=account_id,
            task_id=task_id,
            kind=kind,
            amount_units=units,
            note=note,
            created_at=time.time(),
        )
    )


def grant(
    session: Session, account_id: int, units: int, note: str | None = None, kind: str = GRANT
) -> None:
    """Add credits to an account (`adjust`: an operator's correction of either sign);
    never takes the balance below what is reserved."""
    assert kind in (GRANT, ADJUST), kind
    result = session.execute(
        update(Account)
        .where(Account.id == account_id)
        .where(Account.balance_units + units >= Account.reserved_units)
        .values(balance_units=Account.balance_units + units)
    )
    if changed_rows(result) != 1:
        raise ValueError("grant would leave the balance below the reserved credits")
    _append(session, account_id, kind, units, note=note)


def reserve(session: Session, account_id: int, units: int, task_id: str) -> bool:
    """Hold `units` for a new task (and count it in flight); False (and nothing written)
    when the account is short. `limits.reserve_task` checks the limits first."""
    result = session.execute(
        update(Account)
        .where(Account.id == account_id)
        .where(Account.balance_units - Account.reserved_units >= units)
        .values(
            reserved_units=Account.reserved_units + units,
            tasks_in_flight=Account.tasks_in_flight + 1,
        )
    )
    if changed_rows(result) != 1:
        return False
    record_reservation(session, account_id, units, task_id)
    return True


def record_reservation(session: Session, account_id: int, units: int, task_id: str) -> None:
    """The ledger entry of a reservation already made on the account row: a Core insert
    of a statement built once (the ORM's flush of one row cost more than the insert)."""
    session.connection().execute(
        _INSERT_ENTRY,
        {
            "account_id": account_id,
            "task_id": task_id,
            "kind": RESERVE,
            "amount_units": units,
            "note": None,
            "created_at": time.time(),
        },
    )


_INSERT_ENTRY = insert(LedgerEntry)


def charge(session: Session, account_id: int, units: int, task_id: str) -> None:
    """Turn a task's reservation into spending (billing confirmation); the task has ended."""
    session.execute(
        update(Account)
        .where(Account.id == account_id)
        .values(
            balance_units=Account.balance_units - units,
            reserved_units=Account.reserved_units - units,
            tasks_in_flight=Account.tasks_in_flight - 1,
        )
    )
    _append(session, account_id, CHARGE, units, task_id=task_id)


def release(session: Session, account_id: int, units: int, task_id: str) -> None:
    """Give a failed or cancelled task's reservation back; the task has ended."""
    session.execute(
        update(Account)
        .where(Account.id == account_id)
        .values(
            reserved_units=Account.reserved_units - units,
            tasks_in_flight=Account.tasks_in_flight - 1,
        )
    )
    _append(session, account_id, RELEASE, units, task_id=task_id)


def balance(session: Session | Connection, account_id: int) -> Balance:
    """The account's balance and reservations as stored on its row."""
    row = session.execute(
        select(Account.balance_units, Account.reserved_units).where(Account.id == account_id)
    ).one()
    return Balance(row[0], row[1])


def balance_from_entries(session: Session, account_id: int) -> Balance:
    """The same figures recomputed from the ledger alone (for audits and tests)."""
    sums = dict(
        session.execute(
            select(LedgerEntry.kind, func.coalesce(func.sum(LedgerEntry.amount_units), 0))
            .where(LedgerEntry.account_id == account_id)
            .group_by(LedgerEntry.kind)
        ).all()
    )
    get = lambda kind: int(sums.get(kind, 0))  # noqa: E731
    return Balance(
        get(GRANT) + get(ADJUST) - get(CHARGE), get(RESERVE) - get(CHARGE) - get(RELEASE)
    )
