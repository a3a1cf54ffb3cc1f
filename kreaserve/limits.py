"""Limits that hold for an account, whatever number of keys it has, across API processes:
requests (and key creations) per minute, tasks in flight, and the daily spend cap.

Tasks in flight and the daily cap are checked in the transaction that reserves a task's
credits, on the account row, so they are exact. Request rates are counted in leases: each
API process takes a slice of an account's minute from the shared counter in the database
(one upsert per slice) and spends it in memory, so a request costs no database write. A
process never admits more than it leased, so the limit is never exceeded; what a process
leased and did not spend before the minute ended is lost, so an account can be admitted
up to one slice (LEASE_FRACTION of its limit) per process fewer requests than its limit.
No library does per-account quotas over SQLAlchemy on SQLite and PostgreSQL, hence this.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Integer, bindparam, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from kreaserve import ledger
from kreaserve.db import Database
from kreaserve.db.models import Account, RateWindow, Task
from kreaserve.db.rows import changed_rows
from kreaserve.states import BillingState

WINDOW_SECONDS = 60
#: A process leases this share of an account's per-minute limit at a time (at least 1).
LEASE_FRACTION = 1 / 50
#: What the limits count: API requests, and keys an account creates for itself.
REQUESTS, KEY_CREATES = "requests", "key_creates"
_NOUNS = {REQUESTS: "requests", KEY_CREATES: "new keys"}
#: No limit, as a number SQL can compare with.
UNLIMITED = 2**31 - 1


@dataclass(frozen=True)
class Refusal:
    """Why a request may not go on, and when to try again."""

    code: str
    message: str
    retry_after: int


class InsufficientCredits(Exception):
    """The account cannot cover the task's price."""


class LimitReached(Exception):
    """A limit of the account refuses the task (the API answers 429)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


class DailyCapReached(Exception):
    """The task would pass the account's daily spend cap (the API answers 402)."""

    def __init__(self, cap_units: int) -> None:
        super().__init__(f"daily spend cap of {cap_units} units reached")
        self.cap_units = cap_units


def window_of(now: float) -> int:
    return int(now // WINDOW_SECONDS) * WINDOW_SECONDS


def lease_size(limit: int) -> int:
    return max(1, int(limit * LEASE_FRACTION))


def too_many(bucket: str, limit: int, now: float) -> Refusal:
    retry = max(1, int(window_of(now) + WINDOW_SECONDS - now + 0.999))
    return Refusal(
        "rate_limit_exceeded" if bucket == REQUESTS else "key_creation_rate_exceeded",
        f"This account may make {limit} {_NOUNS[bucket]} per minute; retry in {retry} s.",
        retry,
    )


def lease(
    session: Session,
    account_id: int,
    bucket: str,
    limit: int,
    now: float | None = None,
    size: int | None = None,
) -> int:
    """Take up to `size` (default `lease_size(limit)`) of the account's current minute; how
    many were left to take (0 once the minute's limit is used up)."""
    now = time.time() if now is None else now
    size = lease_size(limit) if size is None else size
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    upsert = dialect.insert(RateWindow).values(
        account_id=account_id, bucket=bucket, window_start=window_of(now), count=size
    )
    total = session.execute(
        upsert.on_conflict_do_update(
            index_elements=["account_id", "bucket", "window_start"],
            set_={"count": RateWindow.count + size},
        ).returning(RateWindow.count)
    ).scalar_one()
    return max(0, min(size, limit - (total - size)))


def count_one(
    session: Session, account_id: int, bucket: str, limit: int, now: float | None = None
) -> Refusal | None:
    """Count one event exactly, in the caller's transaction (rare ones: key creations)."""
    now = time.time() if now is None else now
    if lease(session, account_id, bucket, limit, now, size=1):
        return None
    return too_many(bucket, limit, now)


def give_back(session: Session, account_id: int, bucket: str, window: int, unspent: int) -> None:
    """Return what a process leased and will not spend (the account's limit changed)."""
    session.execute(
        update(RateWindow)
        .where(
            RateWindow.account_id == account_id,
            RateWindow.bucket == bucket,
            RateWindow.window_start == window,
        )
        .values(count=RateWindow.count - unspent)
    )


class QuotaLeases:
    """This process's unspent leases, by (account, bucket, minute). Thread-safe."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        #: unspent lease and the limit it was taken under
        self._left: dict[tuple[int, str, int], tuple[int, int]] = {}
        #: minutes known to be used up, with the limit they were used up at
        self._spent: dict[tuple[int, str, int], int] = {}

    def take_local(
        self, account_id: int, bucket: str, limit: int, now: float | None = None
    ) -> Refusal | None | Literal[False]:
        """Spend one from this process's lease: None when admitted, a Refusal when the
        minute is used up, False when a new lease is needed (`take` or `renew`, which block)."""
        now = time.time() if now is None else now
        slot = (account_id, bucket, window_of(now))
        with self._lock:
            left, leased_under = self._left.get(slot, (0, limit))
            if left > 0 and leased_under == limit:
                self._left[slot] = (left - 1, limit)
                return None
            if self._spent.get(slot) == limit:
                return too_many(bucket, limit, now)
        return False

    def take(
        self, account_id: int, bucket: str, limit: int, now: float | None = None
    ) -> Refusal | None:
        """Spend one, leasing more from the database when this process has none left (and
        giving back what it leased under another limit, when the limit changed). The API
        shares its leases instead (`renew`, kreaserve/api/deps.py `spend_request`)."""
        now = time.time() if now is None else now
        local = self.take_local(account_id, bucket, limit, now)
        if local is not False:
            return local
        return self._lease_more(account_id, bucket, limit, now, spend=1)

    def renew(self, account_id: int, bucket: str, limit: int, now: float | None = None) -> None:
        """Lease more of the minute without spending any: afterwards `take_local` admits or
        refuses, unless other requests spent the new lease first. For the API, whose
        requests waiting for a lease share one (kreaserve/api/single_flight.py)."""
        self._lease_more(account_id, bucket, limit, time.time() if now is None else now, spend=0)

    def _lease_more(
        self, account_id: int, bucket: str, limit: int, now: float, spend: int
    ) -> Refusal | None:
        slot = (account_id, bucket, window_of(now))
        with self._lock:
            left, leased_under = self._left.pop(slot, (0, limit))
        with self.db.transaction() as session:
            if left and leased_under != limit:
                give_back(session, account_id, bucket, slot[2], left)
                left = 0
            granted = lease(session, account_id, bucket, limit, now)
        with self._lock:
            self._forget_before(slot[2])
            # Other threads may have leased meanwhile: add to theirs, never overwrite.
            theirs, their_limit = self._left.get(slot, (0, limit))
            mine = left + granted + (theirs if their_limit == limit else 0)
            if mine == 0:
                self._spent[slot] = limit
                return too_many(bucket, limit, now)
            self._left[slot] = (mine - spend, limit)
        return None

    def _forget_before(self, window: int) -> None:
        for table in (self._left, self._spent):
            for slot in [s for s in table if s[2] < window]:
                del table[slot]


def reserve_task(
    session: Session, account_id: int, units: int, task_id: str, default_in_flight: int | None
) -> None:
    """Reserve a new task's price, counting it in flight, in the caller's transaction; one
    UPDATE when the account has room, credits and no daily cap.

    Raises LimitReached (in flight), DailyCapReached or InsufficientCredits otherwise.
    The account row is locked (or SQLite's write lock held) before anything is checked,
    so concurrent creates through any number of processes are counted one at a time."""
    fast = session.connection().execute(
        _RESERVE,
        {"account_id": account_id, "units": units, "limit": default_in_flight or UNLIMITED},
    )
    if changed_rows(fast) == 1:
        ledger.record_reservation(session, account_id, units, task_id)
        return
    row = session.execute(
        select(Account.tasks_in_flight, Account.max_tasks_in_flight, Account.daily_spend_cap_units)
        .where(Account.id == account_id)
        .with_for_update()
    ).one()
    limit = row.max_tasks_in_flight or default_in_flight or UNLIMITED
    if row.tasks_in_flight >= limit:
        raise LimitReached(
            Refusal(
                "too_many_tasks_in_flight",
                f"This account already has {row.tasks_in_flight} unfinished tasks (limit "
                f"{limit}); wait for one to end.",
                5,
            )
        )
    cap = row.daily_spend_cap_units
    if cap is not None and spent_today(session, account_id) + units > cap:
        raise DailyCapReached(cap)
    if not ledger.reserve(session, account_id, units, task_id):
        raise InsufficientCredits


#: Built once: constructing the statement cost more CPU than running it (issue 12).
_RESERVE = (
    update(Account)
    .where(
        Account.id == bindparam("account_id"),
        Account.daily_spend_cap_units.is_(None),
        Account.balance_units - Account.reserved_units >= bindparam("units"),
        Account.tasks_in_flight
        < func.coalesce(Account.max_tasks_in_flight, bindparam("limit", type_=Integer)),
    )
    .values(
        reserved_units=Account.reserved_units + bindparam("units"),
        tasks_in_flight=Account.tasks_in_flight + 1,
    )
)


def spent_today(session: Session, account_id: int, now: float | None = None) -> int:
    """Units the account committed today (UTC): tasks created today and not released."""
    now = time.time() if now is None else now
    midnight = now - now % 86400
    return int(
        session.execute(
            select(func.coalesce(func.sum(Task.price_units), 0)).where(
                Task.account_id == account_id,
                Task.created_at >= midnight,
                Task.billing_state.in_((BillingState.RESERVED, BillingState.CHARGED)),
            )
        ).scalar_one()
    )


def forget_old_windows(session: Session, now: float | None = None) -> int:
    """Delete counters of finished minutes (maintenance)."""
    now = time.time() if now is None else now
    cutoff = window_of(now) - WINDOW_SECONDS
    return changed_rows(session.execute(delete(RateWindow).where(RateWindow.window_start < cutoff)))
