"""Cost of the observe middleware (request id, access log, HTTP metrics) per request.

Runs GET /healthz in-process (httpx ASGITransport, no network) N times on the app with and
without `ObserveMiddleware`, alternating rounds, and prints microseconds per request. The
access log goes to a handler that formats and drops each line, as a real one would format.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from kreaserve.api.app import create_app
from kreaserve.config import Settings


def build(tmp: Path, observed: bool):  # type: ignore[no-untyped-def]
    app = create_app(Settings(data_dir=tmp, cache_dir=tmp / "cache"))
    if not observed:
        app.user_middleware = [
            m for m in app.user_middleware if m.cls.__name__ != "ObserveMiddleware"
        ]
    return app


async def run(app, n: int) -> float:  # type: ignore[no-untyped-def]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for _ in range(50):
            await client.get("/healthz")
        began = time.perf_counter()
        for _ in range(n):
            await client.get("/healthz")
        return (time.perf_counter() - began) / n * 1e6


async def bare_app(scope, receive, send):  # type: ignore[no-untyped-def]
    scope["route"] = ROUTE
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


class _Route:
    path = "/healthz"


ROUTE = _Route()


async def direct(app, n: int) -> float:  # type: ignore[no-untyped-def]
    """The middleware alone: ASGI calls with no HTTP client or framework around them."""

    async def receive():  # type: ignore[no-untyped-def]
        return {"type": "http.request", "body": b""}

    async def send(_message):  # type: ignore[no-untyped-def]
        return None

    began = time.perf_counter()
    for _ in range(n):
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/healthz",
            "headers": [(b"host", b"bench")],
        }
        await app(scope, receive, send)
    return (time.perf_counter() - began) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sink = logging.StreamHandler(open("/dev/null", "w"))  # noqa: SIM115
    sink.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(sink)
    logging.getLogger().setLevel(logging.INFO)
    from kreaserve.db import upgrade

    with tempfile.TemporaryDirectory() as tmp:
        upgrade(f"sqlite:///{Path(tmp) / 'kreaserve.db'}")
        apps = {"without": build(Path(tmp), False), "with": build(Path(tmp), True)}
        times: dict[str, list[float]] = {"without": [], "with": []}
        for _ in range(args.rounds):
            for name, app in apps.items():
                times[name].append(asyncio.run(run(app, args.requests)))
    from kreaserve.api.observe import ObserveMiddleware

    alone = {"bare": [], "observed": []}
    for _ in range(args.rounds):
        alone["bare"].append(asyncio.run(direct(bare_app, args.requests * 5)))
        alone["observed"].append(
            asyncio.run(direct(ObserveMiddleware(bare_app), args.requests * 5))
        )
    cost = statistics.median(alone["observed"]) - statistics.median(alone["bare"])
    print(
        f"middleware alone: {cost:.1f} us/request (bare "
        f"{statistics.median(alone['bare']):.1f}, observed "
        f"{statistics.median(alone['observed']):.1f})"
    )
    for name, values in times.items():
        print(
            f"{name:8} middleware: median {statistics.median(values):7.1f} us/request "
            f"(rounds: {', '.join(f'{v:.0f}' for v in values)})"
        )
    print(
        f"overhead: {statistics.median(times['with']) - statistics.median(times['without']):.1f}"
        " us/request"
    )


if __name__ == "__main__":
    main()
