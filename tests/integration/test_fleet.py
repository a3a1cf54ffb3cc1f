"""A fleet with no shared disk and no hand-shared secret: PostgreSQL, an S3 server (moto,
over HTTP), two API processes (`serve --no-worker`) and two workers, each with its own
data folder. Thirty tasks go to both API ports; one worker is killed with SIGKILL
mid-run. Every task ends, every completed task's link downloads a PNG of the right size
from either replica's answer, and the credits are exact."""

from __future__ import annotations

import io
import os
import signal
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
from PIL import Image
from sqlalchemy import select

from kreaserve import contract, ledger
from kreaserve.db import Database, upgrade
from kreaserve.db.models import Task
from tests.conftest import Proc, free_port, make_postgres_database, new_account, spawn, wait_for
from tests.integration.test_generation import GOOD
from tests.s3util import MotoServer

TASKS = 30
ACCOUNTS = 3
CREDITS = 20.0
#: The smallest 1K size of the contract (1152x896 pixels; 16:9's 1344x768 ties).
SIZE, PIXELS = "4:3", (1152, 896)


def fleet_env(database_url: str, cache: Path, s3: MotoServer, bucket: str) -> dict[str, str]:
    """What every process gets: one database, one bucket, and nothing else in common."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("KREASERVE_") or key.startswith("KREASERVE_TEST_")
    }
    return {
        **env,
        **s3.env,
        "KREASERVE_DATABASE_URL": database_url,
        "KREASERVE_S3_BUCKET": bucket,
        "KREASERVE_S3_LINKS": "redirect",
        "KREASERVE_CACHE_DIR": str(cache),
        "KREASERVE_WEIGHTS": "tiny-random",
        "KREASERVE_HOST": "127.0.0.1",
        "KREASERVE_REQUESTS_PER_MINUTE": "1000000",
        # A killed worker's task comes back within seconds, not the default 30 s.
        "KREASERVE_LEASE_SECONDS": "8",
        "KREASERVE_MAX_ATTEMPTS": "4",
        # Two engines on a CPU machine: one thread each, not two fighting over each core.
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }


def png_size(url: str) -> tuple[int, int]:
    """Download a result link with a plain HTTP client (following the API's redirect to
    the store) and return the PNG's size."""
    answer = httpx.get(url, follow_redirects=True, timeout=60)
    assert answer.status_code == 200, (url, answer.status_code, answer.text[:200])
    assert answer.content.startswith(b"\x89PNG")
    return Image.open(io.BytesIO(answer.content)).size


def kill_tree(proc: Proc) -> None:
    """End a process and whatever it started, each by its own PID."""
    try:
        children = psutil.Process(proc.popen.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    proc.stop()
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.mark.slow
@pytest.mark.timeout(1800)  # about 2 minutes on an idle 2-core machine; far more when shared
def test_a_fleet_without_shared_disk_survives_a_killed_worker(
    postgres_server: str, s3_server: MotoServer, weights_cache: Path, tmp_path: Path
) -> None:
    clock = time.monotonic()
    database_url, drop = make_postgres_database(postgres_server)
    upgrade(database_url)  # once, so that the replicas' own starts race only for secrets
    env = fleet_env(database_url, weights_cache, s3_server, s3_server.new_bucket())
    procs: list[Proc] = []
    orphans: list[psutil.Process] = []
    db = Database(database_url)
    try:
        ports = [free_port(), free_port()]
        apis = [
            spawn(
                ["serve", "--no-worker"],
                {
                    **env,
                    "KREASERVE_PORT": str(port),
                    "KREASERVE_DATA_DIR": str(tmp_path / f"api-{n}"),
                },
                tmp_path / f"api-{n}.log",
            )
            for n, port in enumerate(ports)
        ]
        workers = [
            spawn(
                ["worker"],
                {**env, "KREASERVE_DATA_DIR": str(tmp_path / f"worker-{n}")},
                tmp_path / f"worker-{n}.log",
            )
            for n in range(2)
        ]
        procs += [*apis, *workers]
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for url, api in zip(urls, apis, strict=True):
            wait_for(f"{url}/healthz", api, timeout=300)
        wait_for(f"{urls[0]}/readyz", apis[0], timeout=300)

        accounts = [new_account(db, CREDITS, name=f"fleet-{n}") for n in range(ACCOUNTS)]
        owner: dict[str, tuple[int, str]] = {}
        for index in range(TASKS):
            account = accounts[index % ACCOUNTS]
            answer = httpx.post(
                f"{urls[index % 2]}/v1/images/generations",
                json={**GOOD, "size": SIZE, "seed": index + 1},
                headers={"Authorization": f"Bearer {account[1]}"},
                timeout=60,
            )
            assert answer.status_code == 200, answer.text
            owner[answer.json()["id"]] = account
        started = time.monotonic()

        # Kill one worker (SIGKILL: no goodbye) while it holds a task, after some completed.
        victim = workers[0]
        victim_tag = f"-{victim.popen.pid}-"
        deadline = time.monotonic() + 1500
        while True:
            with db.transaction() as session:
                rows = session.execute(select(Task.status, Task.worker_id)).all()
            done = sum(status == contract.COMPLETED for status, _ in rows)
            holding = any(
                status == contract.PROCESSING and victim_tag in (worker or "")
                for status, worker in rows
            )
            if done >= 4 and holding:
                break
            assert time.monotonic() < deadline, "the victim never held a task"
            assert victim.popen.poll() is None, victim.output()
            time.sleep(0.05)
        orphans = psutil.Process(victim.popen.pid).children(recursive=True)
        victim.popen.send_signal(signal.SIGKILL)
        victim.popen.wait(30)
        killed_at = time.monotonic() - started

        while True:  # every task ends
            with db.transaction() as session:
                tasks = session.execute(select(Task)).scalars().all()
            if all(task.status in contract.TERMINAL for task in tasks):
                break
            assert time.monotonic() < deadline, [t.status for t in tasks]
            assert workers[1].popen.poll() is None, workers[1].output()
            time.sleep(0.2)
        ran = time.monotonic() - started
        assert len(tasks) == TASKS
        assert [t.id for t in tasks if t.status != contract.COMPLETED] == []
        recovered = [t.id for t in tasks if t.attempts > 1]
        assert recovered, "no task was taken back from the killed worker"

        for task in tasks:  # from either replica's answer, each link downloads the PNG
            key = owner[task.id][1]
            links = []
            for url in urls:
                body = httpx.get(
                    f"{url}/v1/tasks/{task.id}",
                    timeout=30,
                    headers={"Authorization": f"Bearer {key}"},
                ).json()
                assert body["status"] == "completed"
                links += body["results"]
            for link in links:
                assert png_size(link) == PIXELS
            # The replicas sign alike with no secret set: one's link works on the other.
            link = urlsplit(links[0])
            assert png_size(f"{urls[1]}{link.path}?{link.query}") == PIXELS

        with db.transaction() as session:  # credits exact, to the unit
            for account_id, _key in accounts:
                completed = sum(1 for t in tasks if owner[t.id][0] == account_id)
                standing = ledger.balance(session, account_id)
                assert standing.reserved_units == 0
                assert standing.balance_units == ledger.to_units(
                    CREDITS
                ) - completed * ledger.to_units(0.45)
                assert ledger.balance_from_entries(session, account_id) == standing
        for folder in tmp_path.glob("*-[01]"):  # no process kept a result on its disk
            assert not list(folder.rglob("*.png")), folder
        print(
            f"\nfleet: {TASKS} tasks over 2 API replicas and 2 workers, worker killed "
            f"(SIGKILL) at {killed_at:.1f} s, {len(recovered)} task(s) recovered, all "
            f"{TASKS} completed in {ran:.1f} s; credits exact for {ACCOUNTS} accounts; "
            f"whole test {time.monotonic() - clock:.1f} s"
        )
    finally:
        for proc in procs:
            kill_tree(proc)
        for orphan in orphans:
            try:
                orphan.kill()
            except psutil.NoSuchProcess:
                pass
        db.dispose()
        drop()
