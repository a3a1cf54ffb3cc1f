"""Who is calling: API key -> principal, with a short-lived cache in each API process.

Every request authenticates, so a database read per request would be the largest cost of
a poll. Each process keeps what it read about a key (or that no such key exists) for
`ttl` seconds: a key revoked through another process, or an account whose limits or
group changed there, takes effect here within `ttl` seconds; through this process, at
once (`forget_key`, `forget_account`). Only SHA-256 digests of keys are held.

An entry past half its `ttl` is due: the API reads it again in the background while it
still answers from it (`kreaserve.api.key_reads`), so a busy key is never found expired and
its requests do not all wait for the database at once.

`last_used_at` is recorded in memory and written by `flush_last_used` (the app calls it
every LAST_USED_RESOLUTION / 2 seconds), so a request writes nothing.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final, cast

from sqlalchemy import Table, bindparam, or_, select, update

from kreaserve.accounts import Principal, hash_key
from kreaserve.db import Database
from kreaserve.db.models import Account, ApiKey

#: last_used_at is stored at this resolution (seconds)
LAST_USED_RESOLUTION = 60.0
#: A cache entry saying "no such key".
UNKNOWN: Final = None
#: An entry this far into its time is due to be read again (in the background).
REFRESH_AFTER: Final = 0.5


class KeyCache:
    """key digest -> (principal or None, read at); bounded, least recently used out."""

    def __init__(
        self,
        db: Database,
        ttl: float,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db, self.ttl, self.max_entries = db, ttl, max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[Principal | None, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._used: dict[int, float] = {}
        #: counts `_forget` calls: a read that saw it change does not cache its answer
        self._generation = 0

    def cached(self, digest: str) -> tuple[bool, Principal | None]:
        """(found, principal): found is False when the database must be asked."""
        found, principal, _due = self.entry(digest)
        return found, principal

    def entry(self, digest: str) -> tuple[bool, Principal | None, bool]:
        """(found, principal, due): found is False when the database must be asked; due
        when the entry is past REFRESH_AFTER of its time and should be read again."""
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return False, None, False
            age = self._clock() - entry[1]
            if age >= self.ttl:
                return False, None, False
            self._entries.move_to_end(digest)
            return True, entry[0], age >= self.ttl * REFRESH_AFTER

    def lookup(self, digest: str) -> Principal | None:
        """Read the key from the database (one statement) and cache the answer, unless this
        process forgot a key or an account while it read (a revocation the read may not
        have seen must not be cached over)."""
        read_at = self._clock()
        with self._lock:
            generation = self._generation
        principal = self._read(digest)
        with self._lock:
            if generation == self._generation:
                self._entries[digest] = (principal, read_at)
                self._entries.move_to_end(digest)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        return principal

    @property
    def generation(self) -> int:
        """How many times this process forgot keys or accounts: a read started under an
        older generation may have missed a revocation (kreaserve/api/key_reads.py)."""
        with self._lock:
            return self._generation

    def _read(self, digest: str) -> Principal | None:
        with self.db.read() as session:
            row = session.execute(
                select(
                    ApiKey.id,
                    ApiKey.account_id,
                    ApiKey.revoked_at,
                    Account.user_group,
                    Account.requests_per_minute,
                    Account.max_tasks_in_flight,
                )
                .join(Account, Account.id == ApiKey.account_id)
                .where(ApiKey.key_hash == digest)
            ).one_or_none()
        if row is None or row.revoked_at is not None:
            return UNKNOWN
        return Principal(
            account_id=row.account_id,
            key_id=row.id,
            user_group=row.user_group,
            requests_per_minute=row.requests_per_minute,
            max_tasks_in_flight=row.max_tasks_in_flight,
        )

    def authenticate(self, raw_key: str) -> Principal | None:
        """The principal of a key (cached or read), or None when unknown or revoked. For
        tools and tests: the API reads keys through kreaserve/api/key_reads.py."""
        digest = hash_key(raw_key)
        found, principal = self.cached(digest)
        return principal if found else self.lookup(digest)

    def forget_key(self, key_id: int) -> None:
        """Drop a key revoked through this process: it stops here at once."""
        self._forget(lambda p: p.key_id == key_id)

    def forget_account(self, account_id: int) -> None:
        """Drop an account's keys whose limits or group changed through this process."""
        self._forget(lambda p: p.account_id == account_id)

    def _forget(self, matches) -> None:  # type: ignore[no-untyped-def]
        with self._lock:
            self._generation += 1
            for digest in [d for d, (p, _) in self._entries.items() if p and matches(p)]:
                del self._entries[digest]

    def note_used(self, key_id: int, now: float | None = None) -> None:
        self._used[key_id] = time.time() if now is None else now

    def flush_last_used(self) -> int:
        """Write the keys' last use (where a minute older than stored); how many were due."""
        with self._lock:
            used, self._used = self._used, {}
        if not used:
            return 0
        keys = cast(Table, ApiKey.__table__)
        with self.db.transaction() as session:
            session.connection().execute(
                update(keys)
                .where(
                    keys.c.id == bindparam("key_id"),
                    or_(
                        keys.c.last_used_at.is_(None),
                        keys.c.last_used_at < bindparam("at") - LAST_USED_RESOLUTION,
                    ),
                )
                .values(last_used_at=bindparam("at")),
                [{"key_id": key_id, "at": at} for key_id, at in used.items()],
            )
        return len(used)
