"""Process lifecycle: a crash mid-task loses nothing, results expire and are deleted,
weights that cannot load fail the start with a message instead of a hang."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy import func, select

from kreaserve import ledger
from kreaserve.db.models import LedgerEntry, Task
from tests.conftest import POSTGRES_URL, Server, free_port, new_database, start_server
from tests.integration.test_generation import GOOD, wait_until_done


@pytest.fixture
def fresh_database(backend: tuple[str, Path], tmp_path: Path) -> Iterator[str]:
    """An empty database of the backend under test, for a server of the test's own."""
    url, drop = new_database(backend, tmp_path, "lifecycle.db")
    yield url
    if drop:
        drop()


def test_task_of_a_killed_server_is_finished_after_restart_and_charged_once(
    fresh_database: str, tmp_path: Path, weights_cache: Path
) -> None:
    """Also result expiry, on the restarted server (a generating server of its own costs a
    start and an image): its results live 5 s, and the sweep runs every second."""
    env = {"KREASERVE_LEASE_SECONDS": "3"}
    server = start_server(
        tmp_path / "a", fresh_database, weights_cache, embedded_worker=True, extra_env=env
    )
    account_id, key = server.account(credits=10)
    try:
        with server.client(key) as client:
            task = client.post("/v1/images/generations", json={**GOOD, "seed": 3}).json()
            deadline = time.monotonic() + 120
            while client.get(f"/v1/tasks/{task['id']}").json()["progress"] == 0:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        engine_children = psutil.Process(server.api.popen.pid).children(recursive=True)
        server.api.stop(signal.SIGKILL)  # no shutdown code runs
        # The orphaned engine child notices and exits on its own.
        gone, alive = psutil.wait_procs(engine_children, timeout=10)
        assert not alive, f"engine children outlived their worker: {alive}"
    finally:
        server.stop()

    port = free_port()
    restarted = start_server(
        tmp_path / "b",
        fresh_database,
        weights_cache,
        embedded_worker=True,
        port=port,
        extra_env={
            **env,
            "KREASERVE_RESULT_TTL_SECONDS": "5",
            "KREASERVE_SWEEP_INTERVAL_SECONDS": "1",
            "KREASERVE_PUBLIC_URL": f"http://localhost:{port}/",
        },
        data_dir=server.data_dir,
    )
    try:
        with restarted.client(key) as client:
            final = wait_until_done(client, task["id"], timeout=300)[-1]
            credits = client.get("/v1/credits").json()
        url = final["results"][0]
        assert final["status"] == "completed", final
        assert url.startswith(f"http://localhost:{port}/files/{task['id']}/2-0.png?expires=")
        assert httpx.get(url).status_code == 200
        assert credits["balance"] == 9.55 and credits["reserved"] == 0  # one 1K task, charged once
        with restarted.database().transaction() as session:
            row = session.get(Task, task["id"])
            assert row.attempts == 2
            charges = session.execute(
                select(func.count())
                .select_from(LedgerEntry)
                .where(LedgerEntry.task_id == task["id"], LedgerEntry.kind == "charge")
            ).scalar_one()
            assert charges == 1
            assert ledger.balance_from_entries(session, account_id) == ledger.balance(
                session, account_id
            )
        assert_result_expires(restarted, task["id"], url)
    finally:
        restarted.stop()


def assert_result_expires(server: Server, task_id: str, url: str) -> None:
    """Past its lifetime the URL answers 410 and the sweep deletes the file."""
    [image] = (server.data_dir / "images" / task_id).iterdir()
    deadline = time.monotonic() + 30
    while image.exists():
        assert time.monotonic() < deadline, "the sweep did not delete the expired file"
        time.sleep(0.2)
    response = httpx.get(url)
    assert response.status_code == 410
    assert response.json()["error"]["code"] == "url_expired"
    with server.database().transaction() as session:
        assert session.get(Task, task_id).results_purged is True


@pytest.mark.parametrize("weights", ["/nonexistent/krea-weights", "some-org/not-a-model"])
def test_weights_that_cannot_load_fail_the_start_with_a_clear_message(
    tmp_path: Path, weights: str, weights_cache: Path
) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kreaserve.cli",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path),
            "--weights",
            weights,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **__import__("os").environ,
            "KREASERVE_CACHE_DIR": str(weights_cache),
            "HF_HUB_OFFLINE": "0",
        },
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr[-3000:]
    assert elapsed < 60
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr[-3000:]
    assert "--weights" in last and weights in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_a_lost_database_is_503_with_retry_after_never_500(
    fresh_database: str, tmp_path: Path, weights_cache: Path
) -> None:
    server = start_server(tmp_path, fresh_database, weights_cache, embedded_worker=False)
    try:
        key = server.key()
        server.database().dispose()
        name = fresh_database.rsplit("/", 1)[1]
        import psycopg

        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        with server.client(key) as client:
            for response in (
                client.get("/v1/credits"),
                client.post("/v1/images/generations", json=GOOD),
                client.get("/v1/tasks/task-unified-1-abcdefgh"),
            ):
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"] == "5"
                error = response.json()["error"]
                assert (error["type"], error["code"]) == (
                    "service_unavailable_error",
                    "database_unavailable",
                )
        assert httpx.get(f"{server.url}/healthz").status_code == 200
    finally:
        server.stop()
