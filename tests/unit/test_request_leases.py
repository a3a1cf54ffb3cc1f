"""The requests of an account that find its lease spent share one new lease
(kreaserve/api/deps.py `spend_request`, `QuotaLeases.renew`), in-process on a real SQLite
file: 64 requests at the start of a minute take one slice of the limit, not 64; when one
slice is less than the requests waiting, they take slices one after another until all are
admitted or the minute is used up, never more than the limit."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
from sqlalchemy import event, func, select

from kreaserve import limits
from kreaserve.api.app import create_app
from kreaserve.config import Settings
from kreaserve.db import Database
from kreaserve.db.models import RateWindow
from kreaserve.storage import LocalStorage
from tests.conftest import new_account


def early_in_a_minute() -> None:
    """Wait for a new minute when this one has less than 10 s left (one window per test)."""
    left = 60 - time.time() % 60
    if left < 10:
        time.sleep(left + 0.1)


def leased(db: Database, account_id: int) -> int:
    with db.reading() as connection:
        total = connection.execute(
            select(func.coalesce(func.sum(RateWindow.count), 0)).where(
                RateWindow.account_id == account_id, RateWindow.bucket == limits.REQUESTS
            )
        ).scalar_one()
    return int(total)


def credits_at_once(
    tmp_path: Path, db: Database, limit: int, requests: int
) -> tuple[list[int], int, int]:
    """`requests` GET /v1/credits at once for a new account limited to `limit` a minute:
    (status codes, units leased from the database, lease statements run)."""
    settings = Settings(
        data_dir=tmp_path, database_url=db.url, secret_key="leases", requests_per_minute=limit
    )
    app = create_app(settings, db=db, storage=LocalStorage(settings.images_dir))
    services = app.state.services
    account_id, secret = new_account(db)
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        if "rate_windows" in statement:
            statements.append(statement)

    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {secret}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://kreaserve") as client:
            answers = await asyncio.gather(
                *(client.get("/v1/credits", headers=headers) for _ in range(requests))
            )
        return [answer.status_code for answer in answers]

    early_in_a_minute()
    event.listen(db.engine, "before_cursor_execute", count)
    try:
        codes = asyncio.run(run())
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
        services.threads.shutdown(wait=False)
        services.create_threads.shutdown(wait=False)
    return codes, leased(db, account_id), len(statements)


def test_the_requests_waiting_for_a_lease_share_one(tmp_path: Path, sqlite_db: Database) -> None:
    """Limit 5,000 a minute (a lease is 100): 64 requests at once take one lease. Each
    request that found no lease took its own before: 200 units here, in-process; under wrk
    2.3-2.8 units per request admitted (BENCHMARKS.md)."""
    codes, units, statements = credits_at_once(tmp_path, sqlite_db, limit=5000, requests=64)
    assert codes == [200] * 64
    assert units == 100
    assert statements == 1


def test_waiters_take_slices_one_after_another_until_admitted(
    tmp_path: Path, sqlite_db: Database
) -> None:
    """Limit 40 (a lease is 1): 12 requests at once take 12 slices of one, all admitted
    (as many as the old path took: this guards the waiters' loop, not the sharing)."""
    codes, units, statements = credits_at_once(tmp_path, sqlite_db, limit=40, requests=12)
    assert codes == [200] * 12
    assert units == 12
    assert statements == 12


def test_waiters_past_the_limit_are_refused_and_nothing_more_is_leased(
    tmp_path: Path, sqlite_db: Database
) -> None:
    """Limit 5: of 12 requests at once, 5 are admitted and 7 refused (429) after one
    lease more finds the minute used up (the window counts that last slice asked for,
    granted none, and no lease after it)."""
    codes, units, statements = credits_at_once(tmp_path, sqlite_db, limit=5, requests=12)
    assert sorted(codes) == [200] * 5 + [429] * 7
    assert units == 6
    assert statements == 6


def test_renew_leases_without_spending(sqlite_db: Database) -> None:
    account_id, _ = new_account(sqlite_db)
    quotas = limits.QuotaLeases(sqlite_db)
    start = 1_800_000_000.0  # the start of a minute
    assert quotas.take_local(account_id, limits.REQUESTS, 100, start) is False
    quotas.renew(account_id, limits.REQUESTS, 100, start)
    assert leased(sqlite_db, account_id) == 2  # one slice (a fiftieth), none spent yet
    assert quotas.take_local(account_id, limits.REQUESTS, 100, start) is None
    assert quotas.take_local(account_id, limits.REQUESTS, 100, start) is None
    assert quotas.take_local(account_id, limits.REQUESTS, 100, start) is False
    # A used-up minute: renew leases nothing and the next take_local refuses.
    tiny = limits.QuotaLeases(sqlite_db)
    other, _ = new_account(sqlite_db, name="other")
    tiny.renew(other, limits.REQUESTS, 1, start)
    assert tiny.take_local(other, limits.REQUESTS, 1, start) is None
    tiny.renew(other, limits.REQUESTS, 1, start)
    refusal = tiny.take_local(other, limits.REQUESTS, 1, start)
    assert isinstance(refusal, limits.Refusal)
