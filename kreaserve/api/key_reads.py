"""The API's reads of API keys: one read per key at a time, started before the entry expires.

Each process trusts what it read about a key for `auth_cache_seconds` (kreaserve/auth.py).
When that ran out, every request of the key in flight read it again. Now:

* a request whose entry is past half its time answers from it (still within the bound)
  and starts one read in the background, so a key in steady use never expires;
* a request with no entry, or an expired one, waits for the read of that key already in
  flight, or starts it (kreaserve/api/single_flight.py).

A read does not store what it saw across a revocation made through this process meanwhile
(KeyCache.lookup).
"""

from __future__ import annotations

import functools

from kreaserve.accounts import Principal
from kreaserve.api.single_flight import Runner, SingleFlight
from kreaserve.auth import KeyCache


class KeyReads:
    """`principal(digest)`: the caller of a key digest, from KeyCache or one shared read."""

    def __init__(self, keys: KeyCache, run: Runner) -> None:
        self.keys = keys
        self._run = run
        self._reads = SingleFlight(run, "reading an API key")

    async def principal(self, digest: str) -> Principal | None:
        found, principal, due = self.keys.entry(digest)
        if found:
            if due:  # in the background; this request goes on at once
                self._reads.start(digest, functools.partial(self.keys.lookup, digest))
            return principal
        if self.keys.ttl <= 0:
            # Nothing is trusted: not even a read that started before this request did.
            return await self._run(functools.partial(self.keys.lookup, digest))
        result: Principal | None = await self._reads.wait(
            digest, functools.partial(self.keys.lookup, digest)
        )
        return result

    def reads_in_flight(self) -> int:
        return self._reads.in_flight()
