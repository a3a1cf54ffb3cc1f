"""The API's reads of API keys: one read per key at a time, started before the entry expires.

Each process trusts what it read about a key for `auth_cache_seconds` (kreaserve/auth.py).
When that ran out, every request of the key in flight read it again. Now:

* a request whose entry is past half its time answers from it (still within the bound)
  and starts one read in the background, so a key in steady use never expires;
* a request with no entry, or an expired one, waits for the read of that key already in
  flight, or starts it (kreaserve/api/single_flight.py).

A revocation through this process (KeyCache.forget_key) holds at once: a read that began
before it is neither cached (KeyCache.lookup) nor joined by the requests after it.
"""

from __future__ import annotations

import functools

from kreaserve.accounts import Principal
from kreaserve.api.single_flight import Runner, SingleFlight
from kreaserve.auth import KeyCache


class KeyReads:
    """`principal(keys, digest)`: the caller of a key digest, from the KeyCache or one
    shared read of it."""

    def __init__(self, run: Runner) -> None:
        self._run = run
        self._reads = SingleFlight(run, "reading an API key")

    async def principal(self, keys: KeyCache, digest: str) -> Principal | None:
        found, principal, due = keys.entry(digest)
        if found and not due:  # most requests: nothing more to do
            return principal
        read = functools.partial(keys.lookup, digest)
        if found:  # due: read again in the background; this request goes on at once
            self._reads.start(self._flight(keys, digest), read)
            return principal
        if keys.ttl <= 0:
            # Nothing is trusted: not even a read that started before this request did.
            return await self._run(read)
        result: Principal | None = await self._reads.wait(self._flight(keys, digest), read)
        return result

    @staticmethod
    def _flight(keys: KeyCache, digest: str) -> tuple[KeyCache, str, int]:
        """A read is shared only within one generation of `keys`: a request that comes
        after a revocation through this process (`forget_key`) starts a read of its own
        rather than joining one that began before it and may have seen the key valid."""
        return keys, digest, keys.generation

    def reads_in_flight(self) -> int:
        return self._reads.in_flight()
