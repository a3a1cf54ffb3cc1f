"""The engine child may die or hang; the service must not. Faults are real: the test
kills (SIGKILL, as the kernel's OOM killer does) or freezes (SIGSTOP) the actual engine
child process from outside, mid-generation."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import Server, start_server
from tests.integration.test_generation import GOOD, wait_until_done

#: Asserts wall-clock bounds: runs alone, after the parallel part of the suite.
pytestmark = pytest.mark.timing

#: The generation time-out of these servers. A warm 1K image takes about 2 s here, but the
#: first 1K image on a freshly restarted child (warmed at 256x256 only) was measured above
#: 6 s on a 2-core CI machine, so the task after a hang needs more than that.
TIMEOUT_SECONDS = 15


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, weights_cache: Path) -> Iterator[Server]:
    """One server for both faults: each test uses its own account, and a fault leaves the
    server with a new engine child, which is what each test checks for."""
    folder = tmp_path_factory.mktemp("isolation")
    running = start_server(
        folder,
        f"sqlite:///{folder / 'iso.db'}",
        weights_cache,
        embedded_worker=True,
        extra_env={"KREASERVE_TASK_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS)},
    )
    yield running
    running.stop()


def engine_child(server: Server) -> psutil.Process:
    """The spawned engine process (not multiprocessing's resource tracker)."""
    [child] = [
        c
        for c in psutil.Process(server.api.popen.pid).children(recursive=True)
        if "spawn_main" in " ".join(c.cmdline()) and c.status() != psutil.STATUS_ZOMBIE
    ]
    return child


def wait_processing(client: httpx.Client, task_id: str) -> None:
    deadline = time.monotonic() + 60
    while (body := client.get(f"/v1/tasks/{task_id}").json())["progress"] == 0:
        assert body["status"] in ("pending", "processing"), body
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_killed_engine_child_is_replaced_and_its_task_retried(server: Server) -> None:
    with server.client(server.key(credits=5)) as client:
        task = client.post("/v1/images/generations", json=GOOD).json()
        wait_processing(client, task["id"])
        first = engine_child(server)
        first.send_signal(signal.SIGKILL)
        final = wait_until_done(client, task["id"], timeout=180)[-1]
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        credits = client.get("/v1/credits").json()
    assert final["status"] == "completed", final  # retried on a fresh child
    assert engine_child(server).pid != first.pid
    assert server.api.popen.poll() is None
    assert credits["balance"] == 4.55 and credits["reserved"] == 0  # charged once
    assert "engine process stopped unexpectedly" in server.api.output()


def test_a_hung_engine_child_times_out_and_the_next_task_runs(server: Server) -> None:
    with server.client(server.key(credits=5)) as client:
        task = client.post("/v1/images/generations", json=GOOD).json()
        wait_processing(client, task["id"])
        frozen = engine_child(server)
        frozen.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        final = wait_until_done(client, task["id"], timeout=60)[-1]
        waited = time.monotonic() - started
        after = client.post("/v1/images/generations", json=GOOD).json()
        done = wait_until_done(client, after["id"], timeout=120)[-1]
        credits = client.get("/v1/credits").json()
    assert final["status"] == "failed" and final["error"]["code"] == "generation_timeout", final
    assert waited < TIMEOUT_SECONDS + 9  # the time-out, not the 60 s the client allows
    assert not psutil.pid_exists(frozen.pid) or frozen.status() == psutil.STATUS_ZOMBIE
    assert done["status"] == "completed", done
    assert credits["balance"] == 4.55 and credits["reserved"] == 0
