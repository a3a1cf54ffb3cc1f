"""The API process's RSS step by step: start-up, first create, a short load, a long prompt.

Starts `kreaserve serve --no-worker` on SQLite as bench/api_throughput.py does and reads VmRSS
from /proc after each step (issue 12: under 200 MB after the bench's run):

    .venv/bin/python bench/api_rss.py [--seconds 2]

The load is one wrk run of each of create, poll, credits and healthz at 16 and 64 connections.
The last step sends one prompt over 640 bytes (1,200 tokens, refused), which builds the token
counter's encoding: what a process that gets such prompts carries on top.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_throughput import (  # noqa: E402 - a sibling script, not a package
    lua_script,
    rss_mb,
    run_wrk,
    seed_database,
    serve,
    stop,
    wait_up,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kreaserve-api-rss-"))
    url = f"sqlite:///{work / 'rss.db'}"
    _, key = seed_database(url, 0)
    server, base = serve(url, work / "data", work / "k.log")
    headers = {"Authorization": f"Bearer {key}"}
    steps: list[tuple[str, float]] = []
    try:
        wait_up(base, server)
        steps.append(("after start-up", rss_mb(server.pid)))
        body = {"model": "krea-2-turbo", "prompt": "the polled task"}
        task = httpx.post(f"{base}/v1/images/generations", headers=headers, json=body, timeout=60)
        steps.append(("after the first create", rss_mb(server.pid)))
        poll = f"/v1/tasks/{task.json()['id']}"
        run_id = secrets.token_hex(4)
        for conns in (16, 64):
            for name, method, path in (
                ("create", "POST", "/v1/images/generations"),
                ("poll", "GET", poll),
                ("credits", "GET", "/v1/credits"),
                ("healthz", "GET", "/healthz"),
            ):
                script = work / f"{name}.lua"
                script.write_text(lua_script(method, key, name == "create", run_id))
                sample = run_wrk(base + path, script, conns, args.seconds, server.pid)
                print(f"{name} at {conns}: {sample.rps:.0f}/s, non-2xx {sample.non2xx}")
        steps.append(("after the load", rss_mb(server.pid)))
        body["prompt"] = "a fox, " * 400
        refused = httpx.post(f"{base}/v1/images/generations", headers=headers, json=body)
        assert refused.status_code == 400, refused.text
        steps.append(("after one prompt over 640 bytes", rss_mb(server.pid)))
    finally:
        stop(server)
    print(f"load average {os.getloadavg()[0]:.1f}")
    for name, mb in steps:
        print(f"{name}: {mb:.0f} MB")


if __name__ == "__main__":
    main()
