"""`kreaserve serve` caps glibc's malloc arenas before its threads start (issue 12)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Runs limit_arenas in a fresh interpreter, then allocates from eight threads at once and
#: counts the arenas glibc made (malloc_info lists one <heap> per arena).
_CODE = """
import ctypes, os, sys, tempfile, threading
from kreaserve.malloc_arenas import limit_arenas
applied = limit_arenas()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.fopen.restype = ctypes.c_void_p
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
barrier = threading.Barrier(8)
def churn():
    barrier.wait()
    for _ in range(2000):
        libc.free(libc.malloc(4096))
threads = [threading.Thread(target=churn) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
with tempfile.NamedTemporaryFile() as f:
    stream = libc.fopen(f.name.encode(), b"w")
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    arenas = open(f.name).read().count("<heap nr=")
print(applied, arenas)
"""


def _run(env_extra: dict[str, str]) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env_extra
    out = subprocess.run(
        [sys.executable, "-c", _CODE], capture_output=True, text=True, timeout=60, cwd=ROOT, env=env
    )
    assert out.returncode == 0, out.stderr
    applied, arenas = out.stdout.split()
    return applied, int(arenas)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt(M_ARENA_MAX) is glibc's")
def test_the_limit_holds_for_threads_started_after_it() -> None:
    applied, arenas = _run({})
    assert applied == "True"
    assert 1 <= arenas <= 2


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt(M_ARENA_MAX) is glibc's")
def test_an_operators_malloc_arena_max_wins() -> None:
    applied, arenas = _run({"MALLOC_ARENA_MAX": "4"})
    assert applied == "False"
    assert arenas <= 4


def test_serve_sets_it_before_starting_anything() -> None:
    source = (ROOT / "kreaserve/cli/server.py").read_text()
    body = source.split("def serve(", 1)[1]
    assert body.index("limit_arenas()") < body.index("import uvicorn")
