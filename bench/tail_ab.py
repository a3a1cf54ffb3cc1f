"""Slowest answers of two kreaserve trees side by side: one `serve --no-worker` per tree
(each started in its own tree, on its own database), wrk runs of one GET alternating
between them, printing requests/s, p50, p90, p99 and the slowest answer of every run.

bench/api_throughput.py gives ratios against a bare app with the median p99 of a few short
runs; a stall every few seconds moves the p99 of one short run and not of another. This
runs longer (10 s, several key-cache periods and queue snapshots each) and shows every run.

    .venv/bin/python bench/tail_ab.py --base ../wt-base --new . [--backend sqlite|postgres]
        [--endpoint poll|credits] [--connections 64] [--seconds 10] [--rounds 4]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from api_throughput import (  # noqa: E402
    PG_ADMIN,
    lua_script,
    run_in_tree,
    serve,
    stop,
    tree_env,
    wait_up,
)

#: PostgreSQL databases this run made (dropped at the end)
DATABASES: list[str] = []
SEED = (
    "import sys; sys.path.insert(0, {bench!r}); import api_throughput as bench; "
    "print(*bench.seed_database({url!r}, 0))"
)


def start(tree: Path, backend: str, work: Path) -> tuple[subprocess.Popen, str, str]:
    """A server of `tree` on a fresh database: (process, base URL, key)."""
    if backend == "sqlite":
        url = f"sqlite:///{work}/bench.db"
    else:
        name = f"kreaserve_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        DATABASES.append(name)
        url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    seeded = run_in_tree(tree, [sys.executable, "-c", SEED.format(bench=str(HERE), url=url)])
    _account, key = seeded.split()
    proc, base = serve(url, work, work / "server.log", tree, tree_env(tree))
    wait_up(base, proc)
    return proc, base, key


def run_wrk(url: str, script: Path, connections: int, seconds: int) -> str:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    slowest = re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out)
    pct = dict(re.findall(r"\s(50|90|99)%\s+(\S+)", out))
    rps = float(re.search(r"Requests/sec:\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return (
        f"{rps:8.0f} req/s  p50 {pct['50']:>7}  p90 {pct['90']:>7}  p99 {pct['99']:>7}  "
        f"max {slowest.group(1) if slowest else '?':>8}"
        + (f"  non-2xx {non2xx.group(1)}" if non2xx else "")
        + (f"  socket errors {errors.group(1)}" if errors else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--new", type=Path, required=True)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--endpoint", choices=("poll", "credits"), default="poll")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    trees = {"base": args.base.resolve(), "new": args.new.resolve()}
    servers: dict[str, tuple[subprocess.Popen, str, Path]] = {}
    try:
        for name, tree in trees.items():
            work = Path(tempfile.mkdtemp(prefix=f"tail-{name}-"))
            proc, base, key = start(tree, args.backend, work)
            path = "/v1/credits"
            if args.endpoint == "poll":
                task = httpx.post(
                    f"{base}/v1/images/generations",
                    headers={"Authorization": f"Bearer {key}"},
                    json={"model": "krea-2-turbo", "prompt": "the polled task"},
                    timeout=30,
                ).json()
                path = f"/v1/tasks/{task['id']}"
            script = work / "get.lua"
            script.write_text(lua_script("GET", key, False, uuid.uuid4().hex[:8]))
            servers[name] = (proc, base + path, script)
        for _, url, script in servers.values():  # warm both up
            run_wrk(url, script, args.connections, 2)
        load = os.getloadavg()
        print(
            f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC · {platform.machine()}, "
            f"{os.cpu_count()} cores · load {load[0]:.2f} · {args.backend}, GET {args.endpoint}, "
            f"{args.connections} connections, {args.seconds} s per run · base {trees['base']}, "
            f"new {trees['new']}"
        )
        order = list(servers)
        for round_ in range(args.rounds):
            for name in order if round_ % 2 == 0 else order[::-1]:
                _, url, script = servers[name]
                print(
                    f"  {name:4} {run_wrk(url, script, args.connections, args.seconds)}", flush=True
                )
    finally:
        for proc, _, _ in servers.values():
            stop(proc)
        for name in DATABASES:
            with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
