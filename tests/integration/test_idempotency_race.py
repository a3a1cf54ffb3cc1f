"""Idempotency-Key across real processes: two `kreaserve serve --no-worker` on one database
(SQLite file and PostgreSQL) receive the same key at the same moment, round after round;
each round makes exactly one task and one reservation, and both answers name it. Also
the SDK through a proxy that cuts the connection after the server answered the first
create: the SDK resends it with the same key and the account is charged once."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from kreaserve.client import Client, Retry
from kreaserve.db import upgrade
from kreaserve.db.models import LedgerEntry, Task
from tests.conftest import Server, make_postgres_database, start_server

ROUNDS = 25
BODY = {"model": "krea-2-turbo", "prompt": "a red kite over the dunes", "size": "1:1"}


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def two_servers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, weights_cache: Path
) -> Iterator[tuple[Server, Server]]:
    tmp = tmp_path_factory.mktemp(f"idem-{request.param}")
    drop = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'kreaserve.db'}"
    else:
        url, drop = make_postgres_database(request.getfixturevalue("postgres_server"))
    upgrade(url)  # before both start, so they do not race to migrate
    servers: list[Server] = []
    try:
        for name in ("a", "b"):
            servers.append(
                start_server(
                    tmp / name, url, weights_cache, embedded_worker=False, data_dir=tmp / "data"
                )
            )
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()
        if drop:
            drop()


def counts(server: Server, account_id: int) -> tuple[int, int]:
    """(tasks, reservations) of the account."""
    with server.database().read() as session:
        tasks = session.execute(
            select(func.count()).select_from(Task).where(Task.account_id == account_id)
        ).scalar_one()
        reserved = session.execute(
            select(func.count())
            .select_from(LedgerEntry)
            .where(LedgerEntry.account_id == account_id, LedgerEntry.kind == "reserve")
        ).scalar_one()
    return tasks, reserved


def test_the_same_key_raced_on_two_processes_makes_one_task(
    two_servers: tuple[Server, Server],
) -> None:
    a, b = two_servers
    account, key = a.account(credits=1000)
    headers = {"Authorization": f"Bearer {key}"}

    async def race() -> None:
        async with httpx.AsyncClient(headers=headers, timeout=30) as client:
            for round_number in range(ROUNDS):
                idem = {"Idempotency-Key": f"race-{round_number}"}
                answers = await asyncio.gather(
                    *(
                        client.post(f"{s.url}/v1/images/generations", json=BODY, headers=idem)
                        for s in (a, b, a, b)
                    )
                )
                assert [r.status_code for r in answers] == [200] * 4, [r.text for r in answers]
                ids = {r.json()["id"] for r in answers}
                assert len(ids) == 1, ids
                assert sum("Idempotent-Replayed" in r.headers for r in answers) == 3
                assert counts(a, account) == (round_number + 1, round_number + 1)

    asyncio.run(race())


class CutFirstAnswer:
    """A TCP proxy to `upstream` that, on its first connection, forwards the request and
    then hangs up as soon as the server starts answering (the server has done the work;
    the client never sees it). Later connections are piped through untouched."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            server = socket.create_connection(self.upstream)
            cut = self.connections == 1
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, cut), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket, cut: bool) -> None:
        try:
            while data := source.recv(65536):
                if cut:
                    break
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self.listener.close()


def test_the_sdk_resends_a_create_whose_answer_was_cut_and_is_charged_once(
    two_servers: tuple[Server, Server],
) -> None:
    server = two_servers[0]
    account, key = server.account(credits=10)
    proxy = CutFirstAnswer(server.url)
    try:
        with Client(proxy.url, key, retry=Retry(backoff=0.05)) as client:
            task = client.create(BODY["prompt"], size="1:1")
    finally:
        proxy.close()
    assert proxy.connections == 2  # the cut one and the resent one
    assert counts(server, account) == (1, 1)
    with server.database().read() as session:
        assert session.get(Task, task.id) is not None
