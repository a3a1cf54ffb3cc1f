"""Requests per second of kreaserve's API against a bare FastAPI app, side by side.

For each database (SQLite, and PostgreSQL when reachable) and each queue depth (pending
tasks of another account ahead, inserted directly; no worker runs, so they stay
pending), one `kreaserve serve --no-worker` and one bare FastAPI app (bench/bare_app.py:
the same routes, body model and answer sizes, no work) run as one uvicorn process each.
wrk (Debian's package) loads one at a time, alternating bare and kreaserve per repeat,
for: poll (`GET /v1/tasks/{id}` of a task behind the whole queue), create (`POST
/v1/images/generations`, every prompt new to the moderation), credits and healthz, at
each connection count. Credits and healthz do not touch the queue, so they run at the
first depth only. Tasks made by a create run are cancelled afterwards in the database,
so every run sees the same queue.

    .venv/bin/python bench/api_throughput.py [--seconds 5] [--repeats 3]
        [--connections 16,64] [--depths 0,10000] [--backends sqlite,postgres]
        [--endpoints poll,create,credits,healthz]

The table gives the median over repeats of requests/s, p50 and p99 (wrk's), the ratio
kreaserve / bare, each server's CPU time per request (user + system, from /proc: on a
shared machine it moves far less than requests/s do), and wrk's non-2xx answers and
socket errors (connect/read/write/timeout).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import insert, update

import kreaserve
from kreaserve import accounts, contract, ledger
from kreaserve.db import Database, upgrade
from kreaserve.db.models import Account, Task

HERE = Path(__file__).resolve().parent
PG_ADMIN = os.environ.get(
    "KREASERVE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
WORDS = (
    "fox lighthouse harbour meadow violin glacier lantern orchard canyon falcon "
    "teapot comet library bicycle waterfall cathedral kite desert forest river "
    "mountain castle robot garden ocean balloon tiger owl bridge market"
).split()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lua_script(method: str, key: str | None, create: bool, run_id: str) -> str:
    """A wrk script: the method, the key, and for creates a prompt never sent before
    (a run id, a counter and random words, so no moderation cache can answer it)."""
    lines = [f'wrk.method = "{method}"']
    if key:
        lines.append(f'wrk.headers["Authorization"] = "Bearer {key}"')
    if create:
        words = ", ".join(f'"{w}"' for w in WORDS)
        lines += [
            'wrk.headers["Content-Type"] = "application/json"',
            f"local words = {{{words}}}",
            f"math.randomseed({int(run_id, 16) % 2**31})",
            "local n = 0",
            "request = function()",
            "  n = n + 1",
            "  local w = {}",
            "  for i = 1, 5 do w[i] = words[math.random(#words)] end",
            f'  local prompt = "{run_id} " .. n .. " a " .. table.concat(w, " and a ") '
            '.. " in soft morning light"',
            '  local body = \'{"model":"krea-2-turbo","prompt":"\' .. prompt .. '
            '\'","size":"16:9","quality":"1K"}\'',
            "  return wrk.format(nil, nil, nil, body)",
            "end",
        ]
    return "\n".join(lines) + "\n"


@dataclass
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    socket_errors: str
    #: the server process's CPU time (user + system) per request, from /proc: less moved
    #: by other work on a shared machine than requests per second are
    cpu_ms: float = float("nan")


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(url: str, script: Path, connections: int, seconds: float, pid: int) -> Sample:
    began = cpu_seconds(pid)
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu = cpu_seconds(pid) - began
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return Sample(
        rps,
        p50,
        p99,
        int(non2xx.group(1)) if non2xx else 0,
        "/".join(sock.groups()) if sock else "0/0/0/0",
        cpu * 1000 / max(1, requests),
    )


def wait_up(url: str, proc: subprocess.Popen) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def seed_database(url: str, depth: int) -> tuple[int, str]:
    """The bench account and its key (limits out of the way), and `depth` pending tasks of
    another account, inserted directly."""
    upgrade(url)
    db = Database(url)
    try:
        with db.transaction() as session:
            account_id = accounts.create_account(session, "bench", ledger.to_units(10**9))
            session.execute(
                update(Account)
                .where(Account.id == account_id)
                .values(requests_per_minute=10**9, max_tasks_in_flight=10**9)
            )
            key = accounts.create_key(session, account_id, "bench").secret
            others = accounts.create_account(session, "others", ledger.to_units(10**9))
        now = time.time() - depth * 0.001 - 10
        rows = [
            {
                "id": contract.new_task_id(int(now)),
                "account_id": others,
                "api_key_id": None,
                "model": contract.MODEL,
                "prompt": f"queued task {i}",
                "size": "1:1",
                "quality": "1K",
                "width": 1024,
                "height": 1024,
                "seed": i + 1,
                "nsfw_check": False,
                "callback_url": None,
                "status": contract.PENDING,
                "progress": 0,
                "cancel_requested": False,
                "created": int(now),
                "created_at": now + i * 0.001,
                "attempts": 0,
                "price_units": 4500,
                "user_group": "default",
                "billing_state": "reserved",
                "results_purged": False,
            }
            for i in range(depth)
        ]
        with db.transaction() as session:
            for start in range(0, len(rows), 1000):
                session.execute(insert(Task), rows[start : start + 1000])
    finally:
        db.dispose()
    return account_id, key


def cancel_bench_tasks(url: str, account_id: int, keep: str) -> None:
    """Take the tasks a create run made out of the queue, so the next run sees the same."""
    db = Database(url)
    try:
        with db.transaction() as session:
            session.execute(
                update(Task)
                .where(
                    Task.account_id == account_id, Task.status == contract.PENDING, Task.id != keep
                )
                .values(status=contract.CANCELLED, billing_state="released")
            )
    finally:
        db.dispose()


#: The tree whose kreaserve this bench imported: servers start there. `python -m` puts the
#: working folder first on sys.path, so a server started elsewhere (say, in main while
#: PYTHONPATH names a worktree to compare) would run that folder's kreaserve instead.
TREE = Path(kreaserve.__file__).resolve().parents[1]


def start(args: list[str], env: dict[str, str], log: Path, cwd: Path = TREE) -> subprocess.Popen:
    with log.open("ab") as handle:
        return subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def tree_env(tree: Path) -> dict[str, str]:
    """This environment with `tree`'s kreaserve first (for a process started in `tree`)."""
    return {**os.environ, "PYTHONPATH": str(tree)}


def run_in_tree(tree: Path, args: list[str]) -> str:
    """The output of `args` run with `tree`'s kreaserve (say, seeding its database)."""
    return subprocess.run(
        args, env=tree_env(tree), cwd=tree, capture_output=True, text=True, check=True
    ).stdout


def serve(
    url: str, data: Path, log: Path, tree: Path = TREE, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str]:
    """`kreaserve serve --no-worker` of `tree`, started there, on the database `url`:
    (the process, its base URL)."""
    port = free_port()
    env = {
        **(os.environ if env is None else env),
        "KREASERVE_DATA_DIR": str(data),
        "KREASERVE_DATABASE_URL": url,
        "KREASERVE_PORT": str(port),
        "KREASERVE_HOST": "127.0.0.1",
        "KREASERVE_SECRET_KEY": "bench",
    }
    command = [sys.executable, "-m", "kreaserve.cli", "serve", "--no-worker"]
    return start(command, env, log, cwd=tree), f"http://127.0.0.1:{port}"


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def bench_backend(
    name: str,
    url: str,
    depth: int,
    endpoints: list[str],
    connections: list[int],
    seconds: float,
    repeats: int,
    work: Path,
    rows: list[str],
    rss: list[str],
) -> None:
    account_id, key = seed_database(url, depth)
    data = work / f"data-{name}-{depth}"
    kreaserve, ks_url = serve(url, data, work / f"kreaserve-{name}-{depth}.log")
    bare_port = free_port()
    bare = start(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(HERE),
            "bare_app:app",
            "--port",
            str(bare_port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        os.environ.copy(),
        work / f"bare-{name}-{depth}.log",
    )
    bare_url = f"http://127.0.0.1:{bare_port}"
    try:
        wait_up(ks_url, kreaserve)
        wait_up(bare_url, bare)
        headers = {"Authorization": f"Bearer {key}"}
        task = httpx.post(
            f"{ks_url}/v1/images/generations",
            headers=headers,
            timeout=30,
            json={"model": "krea-2-turbo", "prompt": "the polled task"},
        ).json()
        poll_id = task["id"]
        paths = {
            "poll": ("GET", f"/v1/tasks/{poll_id}"),
            "create": ("POST", "/v1/images/generations"),
            "credits": ("GET", "/v1/credits"),
            "healthz": ("GET", "/healthz"),
        }
        for conns in connections:
            for endpoint in endpoints:
                if endpoint in ("credits", "healthz") and depth != rows_first_depth[0]:
                    continue
                method, path = paths[endpoint]
                samples: dict[str, list[Sample]] = {"bare": [], "kreaserve": []}
                for rep in range(repeats + 1):  # the first round warms both up
                    for side, base, pid in (
                        ("bare", bare_url, bare.pid),
                        ("kreaserve", ks_url, kreaserve.pid),
                    ):
                        script = work / f"{side}-{endpoint}.lua"
                        script.write_text(
                            lua_script(
                                method,
                                key if endpoint != "healthz" else None,
                                endpoint == "create",
                                secrets.token_hex(4),
                            )
                        )
                        sample = run_wrk(
                            base + path, script, conns, 1 if rep == 0 else seconds, pid
                        )
                        if rep:
                            samples[side].append(sample)
                        if endpoint == "create" and side == "kreaserve":
                            cancel_bench_tasks(url, account_id, poll_id)
                rows.append(row(name, depth, conns, endpoint, samples))
                print(rows[-1], flush=True)
        rss.append(
            f"{name}, {depth} pending: kreaserve {rss_mb(kreaserve.pid):.0f} MB, "
            f"bare {rss_mb(bare.pid):.0f} MB"
        )
    finally:
        stop(kreaserve)
        stop(bare)


#: the first queue depth of the run, where credits and healthz are measured
rows_first_depth = [0]


def row(db: str, depth: int, conns: int, endpoint: str, samples: dict[str, list[Sample]]) -> str:
    med = {
        side: Sample(
            statistics.median(s.rps for s in got),
            statistics.median(s.p50_ms for s in got),
            statistics.median(s.p99_ms for s in got),
            sum(s.non2xx for s in got),
            " ".join(s.socket_errors for s in got),
            statistics.median(s.cpu_ms for s in got),
        )
        for side, got in samples.items()
    }
    b, k = med["bare"], med["kreaserve"]
    return (
        f"| {db} | {depth} | {conns} | {endpoint} | {b.rps:.0f} | {b.p50_ms:.1f} / "
        f"{b.p99_ms:.1f} | {k.rps:.0f} | {k.p50_ms:.1f} / {k.p99_ms:.1f} | "
        f"**{k.rps / b.rps:.2f}** | {b.cpu_ms:.2f} / {k.cpu_ms:.2f} | {k.non2xx} | "
        f"{k.socket_errors} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", default="16,64")
    parser.add_argument("--depths", default="0,10000")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--endpoints", default="poll,create,credits,healthz")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")
    connections = [int(c) for c in args.connections.split(",")]
    depths = [int(d) for d in args.depths.split(",")]
    rows_first_depth[0] = depths[0]
    endpoints = args.endpoints.split(",")
    work = Path(tempfile.mkdtemp(prefix="kreaserve-api-bench-"))
    load_before = os.getloadavg()
    began = datetime.now(UTC)
    rows: list[str] = []
    rss: list[str] = []
    try:
        for backend in args.backends.split(","):
            for depth in depths:
                if backend == "sqlite":
                    url = f"sqlite:///{work / f'bench-{depth}.db'}"
                    bench_backend(
                        "SQLite",
                        url,
                        depth,
                        endpoints,
                        connections,
                        args.seconds,
                        args.repeats,
                        work,
                        rows,
                        rss,
                    )
                    continue
                try:
                    import psycopg

                    name = f"kreaserve_bench_{secrets.token_hex(4)}"
                    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as c:
                        c.execute(f'CREATE DATABASE "{name}"')
                except Exception as exc:  # noqa: BLE001
                    print(f"PostgreSQL skipped: {exc}", file=sys.stderr)
                    break
                try:
                    bench_backend(
                        "PostgreSQL",
                        PG_ADMIN.rsplit("/", 1)[0] + "/" + name,
                        depth,
                        endpoints,
                        connections,
                        args.seconds,
                        args.repeats,
                        work,
                        rows,
                        rss,
                    )
                finally:
                    with psycopg.connect(PG_ADMIN, autocommit=True) as c:
                        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        print(f"\nlogs in {work}", file=sys.stderr)
    print(
        f"\n{began:%Y-%m-%d %H:%M} UTC, {(datetime.now(UTC) - began).seconds // 60} min · "
        f"{platform.machine()}, {os.cpu_count()} cores · load average before "
        f"{load_before[0]:.2f} {load_before[1]:.2f}, after "
        f"{os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} · wrk -t1, {args.seconds:g} s "
        f"per run, median of {args.repeats} alternating runs\n"
    )
    print(
        "| database | pending ahead | connections | request | bare req/s | bare p50 / p99 ms "
        "| kreaserve req/s | kreaserve p50 / p99 ms | ratio | CPU ms/request bare / kreaserve "
        "| non-2xx | socket errors "
        "c/r/w/t |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\nRSS after the run: " + "; ".join(rss))


if __name__ == "__main__":
    main()
