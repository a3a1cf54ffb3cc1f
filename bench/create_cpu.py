"""CPU time of one create (`POST /v1/images/generations`), in-process, and where it goes.

The app runs as ASGI under httpx (no HTTP server) on a fresh SQLite file, with the real
prompt moderation; every prompt is new to it (its cache never answers). Process CPU time
(`time.process_time`: every thread, onnxruntime's included) is the figure to compare: on a
shared machine it moves far less than wall time. The parts are then timed alone, in the same
process: the moderation of an unseen prompt, its ONNX run alone, and `task_queue.create`.
With `--allow-all` the moderation is a stub that allows everything (the rest of a create).

    .venv/bin/python bench/create_cpu.py [--requests 300] [--concurrency 1,16] [--allow-all]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx

from kreaserve import accounts, ledger, task_queue
from kreaserve.api.app import create_app
from kreaserve.config import Settings
from kreaserve.db import Database, upgrade
from kreaserve.moderation import Decision
from kreaserve.storage import LocalStorage

WORDS = (
    "fox lighthouse harbour meadow violin glacier lantern orchard canyon falcon "
    "teapot comet library bicycle waterfall cathedral kite desert forest river "
    "mountain castle robot garden ocean balloon tiger owl bridge market"
).split()


class AllowAll:
    """Moderation stand-in for `--allow-all`."""

    def warm(self) -> None:
        pass

    def check(self, prompt: str, *, strict: bool) -> Decision:
        return Decision(allowed=True, category=None, score=0.0, mode="basic", source="rules")


def prompts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return [f"a {' '.join(rng.sample(WORDS, 6))}, study {seed}-{i}, soft light" for i in range(n)]


def cpu_ms(batches: Iterable[list[str]], call: Callable[[str], object]) -> float:
    """CPU ms per call, the least over the batches (each batch its own items)."""
    best = float("inf")
    for items in batches:
        start = time.process_time()
        for item in items:
            call(item)
        best = min(best, (time.process_time() - start) / len(items) * 1e3)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--allow-all", action="store_true")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="kreaserve-create-cpu-"))
    url = f"sqlite:///{tmp / 'bench.db'}"
    upgrade(url)
    settings = Settings(
        data_dir=tmp,
        database_url=url,
        secret_key="bench",
        requests_per_minute=10**7,
        max_tasks_in_flight=10**7,
    )
    db = Database(url)
    app = create_app(settings, db=db, storage=LocalStorage(settings.images_dir))
    services = app.state.services
    moderator = services.moderator
    moderator.warm()
    if args.allow_all:
        services.moderator = AllowAll()
    with db.transaction() as session:
        account_id = accounts.create_account(session, "bench", ledger.to_units(10**7))
        key = accounts.create_key(session, account_id, "bench")

    async def creates(concurrency: int, batch: list[str]) -> float:
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {key.secret}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", headers=headers
        ) as client:
            body = {"model": "krea-2-turbo", "size": "16:9"}
            for prompt in prompts(-1, 20):  # warm-up
                await client.post("/v1/images/generations", json={**body, "prompt": prompt})
            queue = iter(batch)

            async def one_connection() -> None:
                for prompt in queue:
                    answer = await client.post(
                        "/v1/images/generations", json={**body, "prompt": prompt}
                    )
                    assert answer.status_code == 200, answer.text

            start = time.process_time()
            await asyncio.gather(*(one_connection() for _ in range(concurrency)))
            return (time.process_time() - start) / len(batch) * 1e3

    load = os.getloadavg()
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, load {load[0]:.1f} {load[1]:.1f}, "
        f"moderation {'stub (allow all)' if args.allow_all else 'real'}"
    )
    for n, concurrency in enumerate(int(c) for c in args.concurrency.split(",")):
        ms = asyncio.run(creates(concurrency, prompts(n, args.requests)))
        print(f"create, {concurrency} concurrent: {ms:.2f} ms CPU per request")

    # The parts alone (sequential; the least of three runs).
    n = args.requests

    def check(prompt: str) -> object:
        return moderator.check(prompt, strict=False)

    unseen = cpu_ms((prompts(100 + r, n) for r in range(3)), check)
    print(f"  moderation, unseen prompt: {unseen:.2f} ms")
    cached = cpu_ms((prompts(100 + r, n) for r in range(3)), check)
    print(f"  moderation, the same prompts again (its cache): {cached:.2f} ms")
    encoder = moderator._semantic.encoder  # a benchmark of the internals
    onnx = cpu_ms(
        (prompts(200 + r, n) for r in range(3)),
        lambda p: encoder._run(encoder._windows(p)),
    )
    print(f"  of which one ONNX run (with its tokenising): {onnx:.2f} ms")
    principal = services.keys.authenticate(key.secret)
    params = task_queue.NewTask(
        prompt="a fox", size="16:9", quality="1K", seed=None, nsfw_check=False, callback_url=None
    )
    ms = cpu_ms(
        (prompts(300 + r, n) for r in range(3)),
        lambda _: task_queue.create(
            db, account_id, principal.key_id, "default", params, 100, 10**7
        ),
    )
    print(f"  task_queue.create: {ms:.2f} ms")
    load = os.getloadavg()
    print(f"load after {load[0]:.1f} {load[1]:.1f}")
    db.dispose()


if __name__ == "__main__":
    main()
