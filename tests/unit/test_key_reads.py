"""One read of a key at a time, started before its entry expires (kreaserve/api/key_reads.py),
on a real SQLite file: the requests of a key whose entry ran out share one read instead
of one each; an entry past half its time answers at once and is read again in the
background; a revocation made while a read runs is not cached over; a failed read
reaches its waiters and the next request reads again."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from kreaserve import accounts
from kreaserve.api.app import create_app
from kreaserve.api.key_reads import KeyReads
from kreaserve.auth import KeyCache
from kreaserve.config import Settings
from kreaserve.db import Database
from kreaserve.storage import LocalStorage
from tests.conftest import new_account


async def in_thread(call: Callable[[], Any]) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, call)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class GatedCache(KeyCache):
    """A KeyCache on a hand-moved clock whose database reads are counted and held until
    `gate` opens."""

    def __init__(self, db: Database, ttl: float) -> None:
        self.clock = Clock()
        super().__init__(db, ttl, clock=self.clock)
        self.gate = threading.Event()
        self.gate.set()
        self.reads = 0
        self.fail_next = False
        self.read_first = False
        self.after_read: Callable[[], None] | None = None

    def _read(self, digest: str) -> accounts.Principal | None:
        self.reads += 1
        # With read_first, the database is read before the gate (a read that saw the key
        # and has not returned yet); otherwise after it.
        early = super()._read(digest) if self.read_first else None
        if not self.gate.wait(10):
            raise TimeoutError("the test never opened the gate")
        if self.fail_next:
            self.fail_next = False
            raise OperationalError("SELECT", {}, Exception("database is down"))
        principal = early if self.read_first else super()._read(digest)
        if self.after_read is not None:
            self.after_read()
        return principal


def a_key(db: Database, ttl: float) -> tuple[int, GatedCache, KeyReads, str]:
    """A new account's key: (account id, a gated cache of `ttl`, shared reads, its digest)."""
    account_id, secret = new_account(db)
    return account_id, GatedCache(db, ttl), KeyReads(in_thread), accounts.hash_key(secret)


def test_the_requests_of_an_expired_key_share_one_read(sqlite_db: Database) -> None:
    account_id, keys, reads, digest = a_key(sqlite_db, ttl=30)

    async def scenario() -> list[accounts.Principal | None]:
        keys.gate.clear()
        waiting = [asyncio.create_task(reads.principal(keys, digest)) for _ in range(64)]
        await asyncio.sleep(0.2)  # every request is waiting now
        assert reads.reads_in_flight() == 1
        keys.gate.set()
        return await asyncio.gather(*waiting)

    found = asyncio.run(scenario())
    assert keys.reads == 1  # one read each before: 64
    assert {p.account_id for p in found if p is not None} == {account_id}
    assert all(p is not None for p in found)
    assert keys.cached(digest) == (True, found[0])


async def settled(reads: KeyReads, keys: GatedCache, count: int) -> None:
    """Until `count` reads have begun and none is in flight (5 s at most)."""
    for _ in range(500):
        if keys.reads >= count and not reads.reads_in_flight():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{keys.reads} reads began, {reads.reads_in_flight()} in flight")


def test_an_entry_past_half_its_time_answers_at_once_and_is_read_again(
    sqlite_db: Database,
) -> None:
    _, keys, reads, digest = a_key(sqlite_db, ttl=2)

    async def scenario() -> None:
        first = await reads.principal(keys, digest)
        assert keys.reads == 1
        keys.clock.now += 0.9  # young: no read
        assert await reads.principal(keys, digest) == first
        assert keys.reads == 1
        keys.clock.now += 0.2  # past half of 2 s
        keys.gate.clear()  # the read cannot finish: the answers must not wait for it
        answers = await asyncio.wait_for(
            asyncio.gather(*(reads.principal(keys, digest) for _ in range(10))), 5
        )
        assert answers == [first] * 10
        assert reads.reads_in_flight() == 1  # one read in the background, for all ten
        keys.gate.set()
        await settled(reads, keys, 2)
        assert keys.reads == 2
        assert keys.entry(digest) == (True, first, False)  # read again: a fresh entry
        keys.clock.now += 1.5  # the first read's time is over; the entry read at 1.1 s lives
        assert keys.entry(digest)[0]
        keys.clock.now += 0.6  # and past its own 2 s it is gone: read again, waited for
        assert keys.entry(digest) == (False, None, False)
        assert await reads.principal(keys, digest) == first
        assert keys.reads == 3

    asyncio.run(scenario())


def test_a_request_after_a_revocation_does_not_join_a_read_that_began_before_it(
    sqlite_db: Database,
) -> None:
    """A read in flight (a background refresh, say) saw the key valid; the key is revoked
    through this process meanwhile. A request after that reads again and is refused."""
    _, keys, reads, digest = a_key(sqlite_db, ttl=2)

    async def scenario() -> None:
        principal = await reads.principal(keys, digest)
        assert principal is not None
        keys.clock.now += 2.5  # expired
        keys.read_first = True
        keys.gate.clear()
        before = asyncio.create_task(reads.principal(keys, digest))
        await asyncio.sleep(0.1)
        assert reads.reads_in_flight() == 1
        with sqlite_db.transaction() as session:
            assert accounts.revoke_key(session, str(principal.key_id))
        keys.forget_key(principal.key_id)
        after = asyncio.create_task(reads.principal(keys, digest))
        await asyncio.sleep(0.1)
        assert reads.reads_in_flight() == 2
        keys.gate.set()
        assert await after is None
        # The request that came before the revocation got what its read saw; that is not
        # cached, so nothing after the revocation sees the key valid.
        assert await before == principal
        assert keys.cached(digest) == (True, None)

    asyncio.run(scenario())


def test_a_key_revoked_while_its_read_runs_is_not_cached(sqlite_db: Database) -> None:
    account_id, keys, _, digest = a_key(sqlite_db, ttl=30)
    principal = keys.lookup(digest)
    assert principal is not None
    keys.forget_key(principal.key_id)
    # The revocation lands (and this process forgets the key) after the read saw the key
    # valid: the read answers its own request, but nothing is cached.
    keys.after_read = lambda: keys.forget_key(principal.key_id)
    assert keys.lookup(digest) == principal
    assert keys.cached(digest) == (False, None)
    keys.after_read = None
    assert keys.lookup(digest) == principal
    assert keys.cached(digest) == (True, principal)
    # An account changed through this process while a read runs: the same.
    keys.forget_account(account_id)
    keys.after_read = lambda: keys.forget_account(account_id)
    keys.lookup(digest)
    assert keys.cached(digest) == (False, None)


def test_a_failed_read_reaches_its_waiters_and_the_next_request_reads_again(
    sqlite_db: Database,
) -> None:
    _, keys, reads, digest = a_key(sqlite_db, ttl=30)

    async def scenario() -> None:
        keys.fail_next = True
        keys.gate.clear()
        waiting = [asyncio.create_task(reads.principal(keys, digest)) for _ in range(5)]
        await asyncio.sleep(0.1)
        keys.gate.set()
        results = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(r, OperationalError) for r in results)
        assert keys.reads == 1
        assert reads.reads_in_flight() == 0
        assert await reads.principal(keys, digest) is not None
        assert keys.reads == 2

    asyncio.run(scenario())


def test_a_failed_background_read_is_logged_and_the_entry_serves_until_it_expires(
    sqlite_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    _, keys, reads, digest = a_key(sqlite_db, ttl=2)

    async def scenario() -> None:
        first = await reads.principal(keys, digest)
        keys.clock.now += 1.2
        keys.fail_next = True
        with caplog.at_level(logging.WARNING, "kreaserve.api"):
            assert await reads.principal(keys, digest) == first  # due: read in the background
            await settled(reads, keys, 2)
        assert "reading an API key failed" in caplog.text
        assert await reads.principal(keys, digest) == first  # still within its 2 s
        await settled(reads, keys, 3)  # still due: read again in the background, and it worked
        assert keys.reads == 3
        keys.clock.now += 1.9  # past the first read's 2 s, within the third's
        assert await reads.principal(keys, digest) == first
        keys.clock.now += 2.1
        assert await reads.principal(keys, digest) == first  # expired: read, waited for
        assert keys.reads >= 4

    asyncio.run(scenario())


def test_a_cancelled_waiter_does_not_cancel_the_read_others_wait_for(
    sqlite_db: Database,
) -> None:
    _, keys, reads, digest = a_key(sqlite_db, ttl=30)

    async def scenario() -> None:
        keys.gate.clear()
        leaving = asyncio.create_task(reads.principal(keys, digest))
        staying = asyncio.create_task(reads.principal(keys, digest))
        await asyncio.sleep(0.1)
        leaving.cancel()
        await asyncio.sleep(0.05)
        assert reads.reads_in_flight() == 1
        keys.gate.set()
        assert await staying is not None
        assert leaving.cancelled()
        assert keys.reads == 1

    asyncio.run(scenario())


def test_with_no_trust_every_request_reads_for_itself(sqlite_db: Database) -> None:
    """auth_cache_seconds = 0: not even a read that began before the request is shared."""
    _, keys, reads, digest = a_key(sqlite_db, ttl=0)

    async def scenario() -> None:
        await asyncio.gather(*(reads.principal(keys, digest) for _ in range(5)))

    asyncio.run(scenario())
    assert keys.reads == 5


def test_polls_through_the_app_read_an_expired_key_once(
    tmp_path: Path, sqlite_db: Database
) -> None:
    """64 polls at once, in-process, of a key this process holds no entry for (as when its
    entry expired): one read of the key, not 64."""
    db = sqlite_db
    settings = Settings(data_dir=tmp_path, database_url=db.url, secret_key="keys")
    app = create_app(settings, db=db, storage=LocalStorage(settings.images_dir))
    services = app.state.services
    services.keys = KeyCache(db, ttl=30)
    _, secret = new_account(db)
    key_reads = []

    def count(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        if "FROM api_keys" in statement:
            key_reads.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)

    async def polls() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {secret}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://kreaserve") as client:
            return [
                r.status_code
                for r in await asyncio.gather(
                    *(
                        client.get("/v1/tasks/task-unified-0-nothing0", headers=headers)
                        for _ in range(64)
                    )
                )
            ]

    try:
        assert asyncio.run(polls()) == [404] * 64
        assert len(key_reads) == 1
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
        services.threads.shutdown(wait=False)
        services.create_threads.shutdown(wait=False)
