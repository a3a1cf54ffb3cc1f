"""Take the API process's start-up heap out of the garbage collector's way (`gc.freeze`).

Once the prompt classifier, the app and its routes are loaded, the process holds a few
hundred thousand objects that live as long as it does, and every full collection walked all
of them: under wrk, 54-87 ms each in a poll run on PostgreSQL (one of 72 ms in a create
run), and the requests in flight waited for them; frozen, 1.2-1.5 ms (BENCHMARKS.md).
`gc.freeze()` moves what is alive at that moment into a permanent generation that
collections skip. Objects made later are collected as before; one that was alive at the
freeze and later becomes part of unreachable cycles is never freed (a replaced cache, a
discarded pooled connection): a little memory, against a pause on every full collection.

Once per process: in a test run, the first app's start-up freezes what the test process
holds then, and later apps' heaps stay in the ordinary generations."""

from __future__ import annotations

import gc
import threading

_lock = threading.Lock()
_frozen = False


def freeze_startup_heap() -> bool:
    """Collect, then freeze what is left; True the first time in this process."""
    global _frozen
    with _lock:
        if _frozen:
            return False
        gc.collect()
        gc.freeze()
        _frozen = True
        return True
