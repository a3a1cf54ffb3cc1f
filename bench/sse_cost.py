"""The database cost of one GET /v1/tasks/{id}/events stream against a client polling
GET /v1/tasks/{id} once a second, over the same seconds (issue 15).

The app runs in-process (httpx ASGITransport) on a SQLite file (and PostgreSQL with
--postgres URL); a processing task advances one phase every `--step` seconds (the
worker's writes are not counted), and SQLAlchemy events count the transactions and
statements the API sends. The stream runs with the real POLL_SECONDS (1 s); the poller
sends one GET a second with the production key cache and rate-limit leases. The queue
snapshot (read at most once a second per process, shared by every stream and poll of it)
is counted in both.

    PYTHONPATH=. .venv/bin/python bench/sse_cost.py [--seconds 20] [--postgres postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import httpx

from kreaserve import phases
from kreaserve import task_queue as queue
from kreaserve.api.app import create_app
from kreaserve.config import Settings
from kreaserve.db import Database, upgrade
from kreaserve.storage import LocalStorage
from tests.conftest import make_postgres_database, new_account
from tests.unit.test_request_cost import AllowAll, Counter

WORKER = "bench"


async def watch(app, db: Database, key: str, mode: str, seconds: float, step: float) -> tuple:
    worker_db = Database(str(db.engine.url.render_as_string(hide_password=False)))
    task = queue.create(
        worker_db, 1, None, "default", queue.NewTask("x", "1:1", "1K", 1, False, None), 1
    )
    queue.claim(worker_db, WORKER, 3600)
    counter = Counter(db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://b", headers={"Authorization": f"Bearer {key}"}
    ) as client:

        async def advance() -> None:
            for k in range(1, 9):
                await asyncio.sleep(step)
                await asyncio.to_thread(
                    queue.renew, worker_db, task.id, WORKER, 3600, k * 11, phases.denoising(k, 8)
                )

        async def poll() -> None:
            while True:
                assert (await client.get(f"/v1/tasks/{task.id}")).status_code == 200
                await asyncio.sleep(1.0)

        worker = asyncio.create_task(advance())
        counter.start()
        if mode == "stream":
            watcher = asyncio.create_task(client.get(f"/v1/tasks/{task.id}/events"))
        else:
            watcher = asyncio.create_task(poll())
        await asyncio.sleep(seconds)
        cost = counter.stop()
        worker.cancel()
        await asyncio.to_thread(queue.complete, worker_db, task.id, WORKER, ["k"], 60, 1.0)
        if mode == "stream":
            await asyncio.wait_for(watcher, 10)
        else:
            watcher.cancel()
    worker_db.dispose()
    return cost.transactions / seconds, cost.statements / seconds, cost.row_writes / seconds


def run(url: str, seconds: float, step: float) -> None:
    upgrade(url)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), database_url=url, secret_key="bench")
        db = Database(url)
        app = create_app(settings, db=db, storage=LocalStorage(settings.images_dir))
        app.state.services.moderator = AllowAll()
        _, key = new_account(db)
        for mode in ("stream", "poll 1 Hz"):
            tx, statements, writes = asyncio.run(watch(app, db, key, mode, seconds, step))
            print(
                f"{db.engine.dialect.name:10} {mode:10} per second: {tx:.2f} transactions, "
                f"{statements:.2f} statements, {writes:.2f} row writes"
            )
        db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--step", type=float, default=2.0, help="seconds per phase")
    parser.add_argument("--postgres", help="admin URL of a PostgreSQL to make a database on")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run(f"sqlite:///{tmp}/bench.db", args.seconds, args.step)
    if args.postgres:
        url, drop = make_postgres_database(args.postgres)
        try:
            run(url, args.seconds, args.step)
        finally:
            drop()


if __name__ == "__main__":
    main()
