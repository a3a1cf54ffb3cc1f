"""Callbacks under a hostile tenant: one account's hanging receivers must not delay another
account's callback, redelivery of a still-pending delivery is refused (409) and redelivery
is rate-limited per account (429 with Retry-After). Real HTTPS receiver, real server (API
only: tasks are ended by cancelling them while pending, which queues their callbacks)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_URL, Server, callback_env, make_postgres_database, start_server
from tests.integration.test_callbacks import Receiver, attempts
from tests.integration.test_generation import GOOD
from tests.tlsutil import https_server

#: Asserts wall-clock bounds: runs alone, after the parallel part of the suite.
pytestmark = pytest.mark.timing

HOG_DELIVERIES = 40
PER_ACCOUNT = 2
REDELIVERIES_PER_MINUTE = 3


@pytest.fixture
def receiver(callback_tls: tuple[Path, Path, Path]) -> Iterator[Receiver]:
    receiver = Receiver()
    with https_server(receiver.handler(), callback_tls[1], callback_tls[2]) as port:
        receiver.port = port
        yield receiver
        receiver.release.set()


@pytest.fixture
def server(
    backend: tuple[str, Path],
    callback_tls: tuple[Path, Path, Path],
    weights_cache: Path,
    tmp_path: Path,
) -> Iterator[Server]:
    url, drop = f"sqlite:///{tmp_path / 'fair.db'}", None
    if not backend[0].startswith("sqlite"):
        url, drop = make_postgres_database(POSTGRES_URL)
    env = {
        **callback_env(callback_tls),
        "KREASERVE_CALLBACK_ACCOUNT_CONCURRENCY": str(PER_ACCOUNT),
        "KREASERVE_CALLBACK_REDELIVERIES_PER_MINUTE": str(REDELIVERIES_PER_MINUTE),
    }
    running = start_server(tmp_path, url, weights_cache, embedded_worker=False, extra_env=env)
    yield running
    running.stop()
    if drop:
        drop()


def ended_task(server: Server, key: str, callback_url: str) -> str:
    """A task that ends at once (cancelled while pending), which queues its callback."""
    with server.client(key) as client:
        created = client.post("/v1/images/generations", json={**GOOD, "callback_url": callback_url})
        assert created.status_code == 200, created.text
        cancelled = client.post(f"/v1/tasks/{created.json()['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        return created.json()["id"]


def test_40_hanging_deliveries_of_one_account_do_not_delay_another_accounts_callback(
    server: Server, receiver: Receiver
) -> None:
    hog, other = server.key(), server.key()
    hanging = [receiver.url(["hang"]) for _ in range(HOG_DELIVERIES)]
    for url in hanging:
        ended_task(server, hog, url)
    deadline = time.monotonic() + 10
    while sum(len(receiver.hits_for(url)) for url in hanging) < PER_ACCOUNT:
        assert time.monotonic() < deadline, "the hanging deliveries were never attempted"
        time.sleep(0.02)
    time.sleep(1.0)  # the sender has had time to take every slot it would give the hog
    held = sum(len(receiver.hits_for(url)) for url in hanging)
    url = receiver.url([200])
    started = time.monotonic()
    ended_task(server, other, url)
    [hit] = receiver.wait_hits(url, 1, timeout=2)
    waited = hit.at - started
    print(
        f"{HOG_DELIVERIES} hanging deliveries of one account ({held} attempted at once); "
        f"the other account's callback arrived in {waited:.2f} s"
    )
    assert waited < 2
    assert held <= PER_ACCOUNT


def test_redelivery_while_a_delivery_is_pending_is_409_and_redelivery_is_rate_limited(
    server: Server, receiver: Receiver
) -> None:
    key = server.key()
    hanging = receiver.url(["hang"])
    stuck = ended_task(server, key, hanging)
    receiver.wait_hits(hanging, 1, timeout=10)
    with server.client(key) as client:
        refused = client.post(f"/v1/tasks/{stuck}/callbacks/redeliver")
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert error["code"] == "callback_pending" and error["param"] == "task_id"
        assert error["type"] == "invalid_request_error" and error["message"]

        url = receiver.url([200])
        task_id = ended_task(server, key, url)
        attempts(server, key, task_id)
        for number in range(REDELIVERIES_PER_MINUTE):
            again = client.post(f"/v1/tasks/{task_id}/callbacks/redeliver")
            assert again.status_code == 202, (number, again.text)
            attempts(server, key, task_id)
        limited = client.post(f"/v1/tasks/{task_id}/callbacks/redeliver")
        assert limited.status_code == 429, limited.text
        assert limited.json()["error"]["type"] == "rate_limit_error"
        assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert len(receiver.hits_for(url)) == 1 + REDELIVERIES_PER_MINUTE
