"""Per-key limits that hold across API processes: requests per minute, tasks in flight,
and the per-account daily spend cap. Counters live in the database, like everything else.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from kreaserve import contract
from kreaserve.db.models import Account, ApiKey, RateWindow, Task

WINDOW_SECONDS = 60


@dataclass(frozen=True)
class Refusal:
    """Why a request may not go on, and when to try again."""

    code: str
    message: str
    retry_after: int


def count_request(session: Session, key_id: int, limit: int,
                  now: float | None = None) -> Refusal | None:
    """Count one request of the key in the current minute; a refusal once over `limit`."""
    now = time.time() if now is None else now
    window = int(now // WINDOW_SECONDS) * WINDOW_SECONDS
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    upsert = dialect.insert(RateWindow).values(key_id=key_id, window_start=window, count=1)
    count = session.execute(
        upsert.on_conflict_do_update(index_elements=["key_id", "window_start"],
                                     set_={"count": RateWindow.count + 1})
        .returning(RateWindow.count)
    ).scalar_one()
    if count <= limit:
        return None
    retry = max(1, int(window + WINDOW_SECONDS - now + 0.999))
    return Refusal("rate_limit_exceeded",
                   f"This key may make {limit} requests per minute; retry in {retry} s.", retry)


def check_in_flight(session: Session, key_id: int, limit: int) -> Refusal | None:
    """Refuse a new task when the key already has `limit` pending or processing tasks.

    Locks the key's row first, so concurrent creates through one key are counted one
    after the other (SQLite serialises writers anyway)."""
    session.execute(select(ApiKey.id).where(ApiKey.id == key_id).with_for_update())
    in_flight = session.execute(
        select(func.count()).select_from(Task)
        .where(Task.api_key_id == key_id,
               Task.status.in_((contract.PENDING, contract.PROCESSING)))
    ).scalar_one()
    if in_flight < limit:
        return None
    return Refusal("too_many_tasks_in_flight",
                   f"This key already has {in_flight} unfinished tasks (limit {limit}); "
                   "wait for one to end.", 5)


def spent_today(session: Session, account_id: int, now: float | None = None) -> int:
    """Units the account committed today (UTC): tasks created today and not released."""
    now = time.time() if now is None else now
    midnight = now - now % 86400
    return int(session.execute(
        select(func.coalesce(func.sum(Task.price_units), 0))
        .where(Task.account_id == account_id, Task.created_at >= midnight,
               Task.billing_state.in_(("reserved", "charged")))
    ).scalar_one())


def check_daily_cap(session: Session, account_id: int, price_units: int) -> int | None:
    """The cap in units when this task would pass the account's daily spend cap, else None.

    Locks the account row, so concurrent creates cannot both slip under the cap."""
    cap = session.execute(
        select(Account.daily_spend_cap_units).where(Account.id == account_id).with_for_update()
    ).scalar_one()
    if cap is None or spent_today(session, account_id) + price_units <= cap:
        return None
    return cap


def forget_old_windows(session: Session, now: float | None = None) -> int:
    """Delete counters of finished minutes (maintenance)."""
    now = time.time() if now is None else now
    cutoff = int(now // WINDOW_SECONDS) * WINDOW_SECONDS - WINDOW_SECONDS
    return session.execute(delete(RateWindow).where(RateWindow.window_start < cutoff)).rowcount
