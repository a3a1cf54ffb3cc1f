"""Cap glibc's malloc arenas in the API process (what ``MALLOC_ARENA_MAX`` does).

glibc gives each thread that allocates under contention its own arena, up to eight per core,
and memory freed in an arena stays with it. The API answers requests from about forty
threadpool threads (anyio's default), so after a load the freed memory of many arenas stays
resident: with two arenas the process measured about 10 MB less RSS after the API benchmark
(BENCHMARKS.md, issue 12). The threads spend most of their time holding the GIL, so sharing
two arenas costs no measurable CPU there.

It must run before the threads start (glibc fixes the limit when it first needs a second
arena). A ``MALLOC_ARENA_MAX`` set in the environment wins; other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

#: glibc's mallopt parameter number for the arena limit (malloc.h: M_ARENA_MAX).
M_ARENA_MAX = -8
#: Arenas for the API process.
API_ARENAS = 2


def limit_arenas(arenas: int = API_ARENAS) -> bool:
    """Cap this process's malloc arenas at `arenas`; True when glibc accepted it."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False  # the operator's setting, already read by glibc at start-up
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))


def trim() -> bool:
    """Hand the free memory at the top of glibc's heaps back to the system (``malloc_trim``).

    For after a large one-off build whose temporaries are freed while long-lived allocations
    sit above them (the token counter's encoding: about 6 MB less RSS after it). False off glibc.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        malloc_trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return False
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc_trim.restype = ctypes.c_int
    return bool(malloc_trim(0))
