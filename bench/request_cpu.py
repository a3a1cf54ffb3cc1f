"""CPU time per request of kreaserve's hot routes against the bare FastAPI app, in-process.

wrk's requests/s on a shared 2-core machine move 2-3x between neighbouring runs; the CPU
a request costs moves far less. This drives each app as ASGI (no HTTP server, no client
library: the scope uvicorn would build, the same for both apps), `--concurrency` requests
at a time, and reports the process's CPU time per request (`time.process_time`, all
threads: the database reads in worker threads count), median (min-max) over rounds that
alternate the two apps. The access log is formatted as `kreaserve serve` formats it and
written to /dev/null.

    PYTHONPATH=. .venv/bin/python bench/request_cpu.py [--requests 3000] [--rounds 5]
        [--concurrency 16] [--endpoints poll,healthz,credits] [--backend sqlite|postgres]
        [--depth 0]

`--depth` puts that many pending tasks of another account in the queue first (as
bench/api_throughput.py does): the queue snapshot read once a second then reads them.

Under valgrind the same runs count machine instructions instead (user space, all
threads; kernel work such as thread wake-ups is not in them; the once-a-second queue
snapshot and key reads left out): a figure that other work on the machine does not move.

    PYTHONPATH=. valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/rc.out \
        .venv/bin/python bench/request_cpu.py --callgrind /tmp/rc.out --requests 300
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import insert

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from api_throughput import PG_ADMIN, seed_database  # noqa: E402
from bare_app import app as bare_app  # noqa: E402

from kreaserve import contract, logs  # noqa: E402
from kreaserve.api.app import create_app  # noqa: E402
from kreaserve.config import Settings  # noqa: E402
from kreaserve.db import Database  # noqa: E402
from kreaserve.db.models import Task  # noqa: E402

TASK_ID = "task-unified-1764424800-benchcpu"


def add_polled_task(url: str, account_id: int) -> None:
    now = time.time()
    db = Database(url)
    try:
        with db.transaction() as session:
            session.execute(
                insert(Task).values(
                    id=TASK_ID,
                    account_id=account_id,
                    api_key_id=None,
                    model=contract.MODEL,
                    prompt="the polled task",
                    size="1:1",
                    quality="1K",
                    width=1024,
                    height=1024,
                    seed=1234567890,
                    nsfw_check=False,
                    callback_url=None,
                    status=contract.PENDING,
                    progress=0,
                    cancel_requested=False,
                    created=int(now),
                    created_at=now,
                    attempts=0,
                    price_units=4500,
                    user_group="default",
                    billing_state="reserved",
                    results_purged=False,
                )
            )
    finally:
        db.dispose()


def scope_for(path: str, key: str | None) -> dict[str, Any]:
    """The scope uvicorn's h11 protocol builds for a GET (`state` as its lifespan gives)."""
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")]
    if key:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "state": {},
    }


async def drive(app: Any, path: str, key: str | None, n: int, concurrency: int) -> None:
    template = scope_for(path, key)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def one() -> None:
        status = 0

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        scope = dict(template)
        scope["state"] = {}
        await app(scope, receive, send)
        if status != 200:
            raise RuntimeError(f"{path}: {status}")

    async def worker(count: int) -> None:
        for _ in range(count):
            await one()

    share, extra = divmod(n, concurrency)
    await asyncio.gather(*(worker(share + (i < extra)) for i in range(concurrency)))


def cpu_us(app: Any, path: str, key: str | None, n: int, concurrency: int) -> float:
    """Process CPU per request (us), all threads."""
    began = time.process_time()
    asyncio.run(drive(app, path, key, n, concurrency))
    return (time.process_time() - began) / n * 1e6


def instructions(
    app: Any, path: str, key: str | None, n: int, concurrency: int, out: str, name: str
) -> float:
    """Instructions per request, counted by callgrind (this process runs under it)."""
    pid = str(os.getpid())
    subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
    asyncio.run(drive(app, path, key, n, concurrency))
    subprocess.run(["callgrind_control", "-d", name, pid], check=True, capture_output=True)
    subprocess.run(["callgrind_control", "-i", "off", pid], check=True, capture_output=True)
    for dump in Path(out).parent.glob(Path(out).name + ".*"):
        text = dump.read_text(errors="replace")
        if f"desc: Trigger: dump {name}\n" in text:
            dump.unlink()
            total = next(line for line in text.splitlines() if line.startswith("totals: "))
            return int(total.split()[1]) / n
    raise RuntimeError(f"no callgrind dump named {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--endpoints", default="poll,healthz,credits")
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--depth", type=int, default=0, help="pending tasks ahead")
    parser.add_argument(
        "--callgrind", metavar="OUT", help="count instructions (run under callgrind, with OUT)"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="request-cpu-"))
    if args.backend == "sqlite":
        url = f"sqlite:///{work / 'bench.db'}"
    else:
        import psycopg

        name = f"bench_cpu_{os.getpid()}"
        admin = PG_ADMIN
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        url = admin.rsplit("/", 1)[0] + f"/{name}"
    account_id, key = seed_database(url, args.depth)
    add_polled_task(url, account_id)

    settings = Settings(data_dir=work, cache_dir=work / "cache", database_url=url)
    logs.setup("text", "INFO")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 - for the process's life
    kreaserve = create_app(settings)
    if args.callgrind:
        # Under valgrind a request takes 50x as long, so the reads made once per second
        # (queue snapshot) or per 2 s (key) would fall on every few requests; at the
        # hundreds of requests per second they amortise over they cost nothing per request.
        kreaserve.state.services.estimates.max_age = 3600.0
        kreaserve.state.services.keys.ttl = 3600.0

    paths = {
        "poll": (f"/v1/tasks/{TASK_ID}", key),
        "healthz": ("/healthz", None),
        "credits": ("/v1/credits", key),
    }
    load = os.getloadavg()
    print(
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC · {args.backend} · "
        f"{args.depth} pending ahead · "
        f"{args.requests} requests x {args.rounds} rounds, {args.concurrency} at a time · "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    if args.callgrind:
        print("| request | bare instructions/req | kreaserve instructions/req | ratio |")
        print("|---|---|---|---|")
    else:
        print("| request | bare CPU us/req | kreaserve CPU us/req | ratio |")
        print("|---|---|---|---|")
    for endpoint in args.endpoints.split(","):
        path, auth = paths[endpoint]
        for app in (bare_app, kreaserve):  # warm-up: caches, pool, snapshot
            cpu_us(app, path, auth, 200, args.concurrency)
        if args.callgrind:
            counted = [
                instructions(
                    app,
                    path,
                    auth,
                    args.requests,
                    args.concurrency,
                    args.callgrind,
                    f"{endpoint}-{side}",
                )
                for side, app in (("bare", bare_app), ("kreaserve", kreaserve))
            ]
            print(
                f"| {endpoint} | {counted[0]:,.0f} | {counted[1]:,.0f} "
                f"| {counted[1] / counted[0]:.2f} |"
            )
            continue
        samples: dict[str, list[float]] = {"bare": [], "kreaserve": []}
        for _ in range(args.rounds):  # alternating, so load drifts hit both alike
            samples["bare"].append(cpu_us(bare_app, path, auth, args.requests, args.concurrency))
            samples["kreaserve"].append(
                cpu_us(kreaserve, path, auth, args.requests, args.concurrency)
            )

        def show(values: list[float]) -> str:
            return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"

        ratio = statistics.median(samples["kreaserve"]) / statistics.median(samples["bare"])
        print(
            f"| {endpoint} | {show(samples['bare'])} | {show(samples['kreaserve'])} | {ratio:.2f} |"
        )
    kreaserve.state.services.db.dispose()
    if args.backend == "postgres":
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name}")
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
