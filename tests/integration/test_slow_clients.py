"""Slow clients against a real `kreaserve serve`: 50 sockets that send one header line or
one body byte per second are closed within the configured deadlines, while normal requests
keep their latency (p50 of GET /healthz measured without and with the slow sockets)."""

from __future__ import annotations

import selectors
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, start_server

#: Asserts wall-clock bounds: runs alone, after the parallel part of the suite.
pytestmark = pytest.mark.timing

HEADER_TIMEOUT = 3.0
BODY_TIMEOUT = 4.0
SLOW_SOCKETS = 50
#: The socket is seen closed within the deadline plus this (one trickle interval, load).
SLACK = 2.5


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, weights_cache: Path) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("slow")
    env = {
        "KREASERVE_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "KREASERVE_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
    }
    running = start_server(
        tmp, f"sqlite:///{tmp / 'slow.db'}", weights_cache, embedded_worker=False, extra_env=env
    )
    yield running
    running.stop()


def head_lines(port: int) -> list[bytes]:
    return [b"GET /healthz HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n"] + [
        f"X-Slow-{n}: {n}\r\n".encode() for n in range(200)
    ]


def body_request(port: int, key: str) -> list[bytes]:
    head = (
        b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n"
        + f"Authorization: Bearer {key}\r\n\r\n".encode()
    )
    return [head] + [b" "] * 1000


def trickle(port: int, pieces: list[list[bytes]], stop: threading.Event) -> dict[int, float]:
    """Open one socket per piece list, send one piece of each per second; returns, per
    socket, the seconds after its first piece at which the server closed it."""
    selector = selectors.DefaultSelector()
    socks, opened, closed = [], {}, {}
    for index, parts in enumerate(pieces):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.setblocking(False)
        socks.append((sock, list(parts)))
        selector.register(sock, selectors.EVENT_READ, index)
    next_send = time.monotonic()
    while not stop.is_set() and len(closed) < len(socks):
        now = time.monotonic()
        if now >= next_send:
            for index, (sock, parts) in enumerate(socks):
                if index in closed or not parts:
                    continue
                try:
                    sock.send(parts.pop(0))
                    opened.setdefault(index, now)
                except OSError:
                    closed[index] = now - opened.get(index, now)
            next_send += 1.0
        for key, _ in selector.select(timeout=max(0.0, min(0.05, next_send - now))):
            index = key.data
            sock = socks[index][0]
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            except BlockingIOError:
                continue
            if not data and index not in closed:
                closed[index] = time.monotonic() - opened.get(index, time.monotonic())
                selector.unregister(sock)
    for sock, _ in socks:
        sock.close()
    selector.close()
    return closed


def p50_latency(url: str, count: int = 40) -> float:
    timings = []
    with httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(count):
            started = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            timings.append(time.perf_counter() - started)
            time.sleep(0.02)
    return statistics.median(timings)


def test_50_slow_sockets_are_closed_within_the_deadlines_and_others_keep_their_latency(
    server: Server,
) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    key = server.key()
    before = p50_latency(server.url)
    half = SLOW_SOCKETS // 2
    pieces = [head_lines(port) for _ in range(half)]
    pieces += [body_request(port, key) for _ in range(SLOW_SOCKETS - half)]
    stop = threading.Event()
    result: dict[int, float] = {}
    thread = threading.Thread(target=lambda: result.update(trickle(port, pieces, stop)))
    thread.start()
    time.sleep(1.5)  # every slow socket is open and trickling
    during = p50_latency(server.url)
    thread.join(timeout=max(HEADER_TIMEOUT, BODY_TIMEOUT) + 20)
    stop.set()
    thread.join(5)
    heads = sorted(result.get(i, float("inf")) for i in range(half))
    bodies = sorted(result.get(i, float("inf")) for i in range(half, SLOW_SOCKETS))
    print(
        f"{SLOW_SOCKETS} slow sockets: header trickles closed after "
        f"{heads[0]:.1f}-{heads[-1]:.1f} s (deadline {HEADER_TIMEOUT} s), body trickles "
        f"after {bodies[0]:.1f}-{bodies[-1]:.1f} s (deadline {BODY_TIMEOUT} s); "
        f"p50 of GET /healthz {before * 1000:.1f} ms without, {during * 1000:.1f} ms with"
    )
    assert heads[-1] <= HEADER_TIMEOUT + SLACK, heads
    assert bodies[-1] <= BODY_TIMEOUT + SLACK + 1, bodies  # the head itself goes out first
    assert during <= max(3 * before, before + 0.05), (before, during)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/healthz").status_code == 200  # still serving
    log = server.api.output()
    assert "unhandled error" not in log and "Traceback" not in log, log[-4000:]
