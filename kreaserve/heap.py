"""Take the API process's start-up heap out of the garbage collector's way (`gc.freeze`).

Once the prompt classifier, the app and its routes are loaded, the process holds a few
hundred thousand objects that live as long as it does, and every full collection walked all
of them: under wrk, a create run saw full collections of 14-72 ms, and the requests in flight
waited for them. `gc.freeze()` moves what is alive at that moment into a permanent generation
that collections skip; garbage made later is collected as before.

Once per process: a second app in the same process (tests) leaves its heap to the ordinary
generations, so nothing of it is kept for good."""

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
