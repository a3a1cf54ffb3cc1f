"""Requests per second of task creation (auth, validation, token count, limits, credit
reservation, insert, estimate) against an endpoint that does nothing (GET /healthz).

One run: for each database (SQLite, and PostgreSQL when reachable) a fresh
`kreaserve serve --no-worker` on a free port; an async client keeps `--concurrency`
requests in flight for `--seconds` per endpoint, after a short warm-up. Client and
server share this machine's cores; the figures are for the whole machine.

    .venv/bin/python bench/create_throughput.py [--seconds 10] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx

PG_ADMIN = os.environ.get(
    "KREASERVE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
BODY = {
    "model": "krea-2-turbo",
    "prompt": "a red fox in snow, cinematic light",
    "size": "16:9",
    "quality": "1K",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kreaserve(args: list[str], env: dict[str, str]) -> str:
    return subprocess.run(
        [sys.executable, "-m", "kreaserve.cli", *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


async def load(
    url: str,
    method: str,
    path: str,
    headers: dict[str, str],
    json: dict | None,
    seconds: float,
    concurrency: int,
) -> tuple[float, list[float], int]:
    """(requests per second, latencies, errors) over `seconds` of steady load."""
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=30
    ) as client:

        async def one_worker(deadline: float) -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                response = await client.request(method, path, json=json)
                latencies.append(time.perf_counter() - start)
                errors += response.status_code != 200

        warm = time.perf_counter() + 1.0
        await asyncio.gather(*(one_worker(warm) for _ in range(concurrency)))
        latencies.clear()
        errors = 0
        began = time.perf_counter()
        await asyncio.gather(*(one_worker(began + seconds) for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return len(latencies) / elapsed, latencies, errors


def run_backend(name: str, database_url: str, seconds: float, concurrency: int) -> list[str]:
    data = Path(tempfile.mkdtemp(prefix="kreaserve-bench-"))
    port = free_port()
    env = {
        **os.environ,
        "KREASERVE_DATA_DIR": str(data),
        "KREASERVE_DATABASE_URL": database_url,
        "KREASERVE_PORT": str(port),
    }
    account = kreaserve(
        [
            "accounts",
            "create",
            "--name",
            "bench",
            "--credits",
            "1000000",
            "--rpm",
            "100000000",
            "--in-flight",
            "100000000",
        ],
        env,
    )
    account_id = account.split('"id": ')[1].split(",")[0]
    key = kreaserve(["keys", "create", "--name", "bench", "--account", account_id], env)
    log = (data / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "kreaserve.cli", "serve", "--no-worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        auth = {"Authorization": f"Bearer {key}"}
        cases = [
            ("GET /healthz (does nothing)", "GET", "/healthz", {}, None),
            ("GET /v1/credits (auth + read)", "GET", "/v1/credits", auth, None),
            ("POST /v1/images/generations", "POST", "/v1/images/generations", auth, BODY),
        ]
        baseline = None
        for label, method, path, headers, body in cases:
            rps, lat, errors = asyncio.run(
                load(url, method, path, headers, body, seconds, concurrency)
            )
            baseline = baseline or rps
            lat.sort()
            rows.append(
                f"| {name} | {label} | {rps:.0f} | {statistics.median(lat) * 1000:.1f} ms "
                f"| {lat[int(len(lat) * 0.99) - 1] * 1000:.1f} ms | {errors} "
                f"| {rps / baseline:.2f}× |"
            )
    finally:
        server.terminate()
        server.wait(30)
        log.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    backends = [("SQLite", f"sqlite:///{tempfile.mkdtemp()}/bench.db")]
    try:
        import psycopg

        name = f"kreaserve_bench_{secrets.token_hex(4)}"
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        backends.append(("PostgreSQL", PG_ADMIN.rsplit("/", 1)[0] + "/" + name))
    except Exception as exc:  # noqa: BLE001
        print(f"PostgreSQL skipped: {exc}", file=sys.stderr)
        name = None
    rows = []
    try:
        for label, url in backends:
            rows += run_backend(label, url, args.seconds, args.concurrency)
    finally:
        if name:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(
        f"\n{date.today()} · {platform.machine()}, {os.cpu_count()} cores · one uvicorn "
        f"process · {args.concurrency} requests in flight · {args.seconds:.0f} s each\n"
    )
    print("| database | endpoint | requests/s | median | p99 | errors | vs. no-op |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
