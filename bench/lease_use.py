"""How much of an account's per-minute request limit one API process leases against what
it admits, under wrk: a process that leases more than it needs holds that part of the
minute away from the account's other processes (kreaserve/limits.py, QuotaLeases).

One `serve --no-worker` of each tree given (started in that tree, on a fresh SQLite file),
an account limited to `--limit` requests a minute, wrk on GET /v1/credits inside one minute;
then the requests wrk made and the units the process leased (the minute's rate window).

    .venv/bin/python bench/lease_use.py --tree ../wt-base --tree . [--limit 60000]
        [--connections 64] [--seconds 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from api_throughput import (  # noqa: E402
    lua_script,
    run_in_tree,
    seed_database,
    serve,
    stop,
    tree_env,
    wait_up,
)


def seed(url: str, limit: int) -> None:
    """(In the tree measured.) The bench account, limited to `limit` requests a minute."""
    from sqlalchemy import update

    from kreaserve.db import Database
    from kreaserve.db.models import Account

    account, key = seed_database(url, 0)
    db = Database(url)
    with db.transaction() as session:
        session.execute(
            update(Account).where(Account.id == account).values(requests_per_minute=limit)
        )
    db.dispose()
    print(account, key)


def one_run(tree: Path, limit: int, connections: int, seconds: int) -> str:
    work = Path(tempfile.mkdtemp(prefix="lease-use-"))
    url = f"sqlite:///{work}/bench.db"
    seeded = run_in_tree(tree, [sys.executable, __file__, "--seed", url, "--limit", str(limit)])
    account, key = seeded.split()
    server, base = serve(url, work, work / "server.log", tree, tree_env(tree))
    try:
        wait_up(base, server)
        if 60 - time.time() % 60 < seconds + 3:  # one minute's window
            time.sleep(60 - time.time() % 60 + 0.2)
        script = work / "get.lua"
        script.write_text(lua_script("GET", key, False, uuid.uuid4().hex[:8]))
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{seconds}s",
                "-s",
                str(script),
                f"{base}/v1/credits",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        stop(server)
    made = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    refused = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    engine = create_engine(url)
    with engine.connect() as connection:
        leased = connection.execute(
            text(
                "SELECT coalesce(sum(count), 0) FROM rate_windows "
                "WHERE account_id = :account AND bucket = 'requests'"
            ),
            {"account": int(account)},
        ).scalar_one()
    engine.dispose()
    return (
        f"requests {made}, refused {refused.group(1) if refused else 0}, leased {leased} "
        f"units ({leased / max(made, 1):.2f} per request)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, action="append", default=[])
    parser.add_argument("--seed", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=60000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.seed:
        seed(args.seed, args.limit)
        return
    print(
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC · limit {args.limit} a minute "
        f"(a lease is {max(1, args.limit // 50)}), {args.connections} connections, "
        f"{args.seconds} s, GET /v1/credits, SQLite"
    )
    for _ in range(args.rounds):
        for tree in args.tree:
            print(
                f"  {tree}: {one_run(tree.resolve(), args.limit, args.connections, args.seconds)}"
            )


if __name__ == "__main__":
    main()
