"""Callbacks over real HTTPS: exact body and headers, signatures, retry timing, the 10 s
cut, durability across a crash, redelivery, and refusal of internal addresses at send
time. The receiver is a real TLS server for `localhost` with a throwaway CA that the
service trusts through SSL_CERT_FILE; `localhost` is named in
KREASERVE_CALLBACK_ALLOW_HOSTS, as the README allows for tests."""

from __future__ import annotations

import http.server
import ipaddress
import secrets
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from kreaserve.client import WebhookVerificationError, verify_callback
from kreaserve.outbound.ssrf import is_internal_address
from tests.conftest import (
    POSTGRES_URL,
    Server,
    callback_env,
    free_port,
    make_postgres_database,
    new_database,
    start_server,
)
from tests.integration.test_generation import GOOD, wait_until_done
from tests.tlsutil import https_server


@dataclass
class Hit:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A real HTTPS endpoint; each path plays a script of answers ("hang" never answers)."""

    port: int = 0
    hits: list[Hit] = field(default_factory=list)
    scripts: dict[str, list[int | str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, script: list[int | str]) -> str:
        path = f"/hook/{secrets.token_hex(6)}"
        self.scripts[path] = list(script)
        return f"https://localhost:{self.port}{path}"

    def hits_for(self, url: str) -> list[Hit]:
        path = "/" + url.split("/", 3)[3]
        with self.lock:
            return [hit for hit in self.hits if hit.path == path]

    def wait_hits(self, url: str, count: int, timeout: float = 60) -> list[Hit]:
        deadline = time.monotonic() + timeout
        while len(hits := self.hits_for(url)) < count:
            assert time.monotonic() < deadline, f"{len(hits)} of {count} callbacks arrived"
            time.sleep(0.02)
        return hits

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    receiver.hits.append(
                        Hit(
                            time.monotonic(),
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                        )
                    )
                    script = receiver.scripts.get(self.path, [200])
                    answer = script.pop(0) if len(script) > 1 else script[0]
                if answer == "hang":
                    receiver.release.wait(30)
                    return
                self.send_response(int(answer))
                if answer == 302:
                    self.send_header("Location", f"https://localhost:{receiver.port}/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        return Handler


@pytest.fixture(scope="module")
def receiver(callback_tls: tuple[Path, Path, Path]) -> Iterator[Receiver]:
    _ca, cert, key = callback_tls
    receiver = Receiver()
    with https_server(receiver.handler(), cert, key) as port:
        receiver.port = port
        yield receiver
        receiver.release.set()


def start(
    backend_url: str,
    tmp: Path,
    cache: Path,
    env: dict[str, str],
    data_dir: Path | None = None,
    database: str | None = None,
) -> Server:
    """A generating server: embedded worker on SQLite, API + worker on PostgreSQL."""
    if backend_url.startswith("sqlite"):
        return start_server(
            tmp,
            database or f"sqlite:///{tmp / 'callbacks.db'}",
            cache,
            embedded_worker=True,
            extra_env=env,
            data_dir=data_dir,
        )
    return start_server(
        tmp,
        database or backend_url,
        cache,
        embedded_worker=False,
        separate_workers=1,
        extra_env=env,
        data_dir=data_dir,
    )


@pytest.fixture(scope="module")
def server(full_server: Server) -> Server:
    """The run's shared generating server: it trusts the receiver's CA (`callback_tls`)."""
    return full_server


def run_task(server: Server, key: str, callback_url: str, **extra: object) -> dict:
    with server.client(key) as client:
        created = client.post(
            "/v1/images/generations", json={**GOOD, "callback_url": callback_url, **extra}
        )
        assert created.status_code == 200, created.text
        return wait_until_done(client, created.json()["id"])[-1]


@pytest.fixture(scope="module")
def sender(
    backend: tuple[str, Path],
    callback_tls: tuple[Path, Path, Path],
    weights_cache: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    """An API without a worker: its tasks end by being cancelled, and its callbacks go
    out from the same outbox and sender as a generated task's. For the tests about
    sending (retries, time-outs, refusals, redelivery, secrets), where no image is needed."""
    tmp = tmp_path_factory.mktemp("callbacks-sender")
    url, drop = new_database(backend, tmp, "sender.db")
    running = start_server(
        tmp, url, weights_cache, embedded_worker=False, extra_env=callback_env(callback_tls)
    )
    yield running
    running.stop()
    if drop:
        drop()


def end_task(server: Server, key: str, callback_url: str) -> dict:
    """Create a task on a server without a worker and cancel it: the task's end, and so
    its callback, without generating an image. Returns the ended task."""
    with server.client(key) as client:
        created = client.post("/v1/images/generations", json={**GOOD, "callback_url": callback_url})
        assert created.status_code == 200, created.text
        cancelled = client.post(f"/v1/tasks/{created.json()['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        return cancelled.json()


def attempts(server: Server, key: str, task_id: str, settled: bool = True) -> list[dict]:
    with server.client(key) as client:
        deadline = time.monotonic() + 60
        while True:
            data = client.get(f"/v1/tasks/{task_id}/callbacks").json()["data"]
            if not settled or (data and data[-1]["status"] != "pending"):
                return data
            assert time.monotonic() < deadline, data
            time.sleep(0.05)


def test_body_is_the_query_body_byte_for_byte_and_the_signature_verifies(
    server: Server, receiver: Receiver
) -> None:
    key = server.key()
    url = receiver.url([200])
    done = run_task(server, key, url, seed=5)
    [hit] = receiver.wait_hits(url, 1)
    with server.client(key) as client:
        query = client.get(f"/v1/tasks/{done['id']}")
        secret = client.get("/v1/callbacks/secret").json()["secret"]
        credits = client.get("/v1/credits").json()
    assert hit.body == query.content  # byte for byte
    assert hit.headers["content-type"] == "application/json"
    assert hit.headers["host"] == f"localhost:{receiver.port}"
    assert hit.headers["webhook-id"] == f"msg_{done['id']}"
    assert abs(int(hit.headers["webhook-timestamp"]) - time.time()) < 30
    assert hit.headers["webhook-signature"].startswith("v1,")
    assert secret.startswith("whsec_")
    task = verify_callback(secret, hit.headers, hit.body)
    assert task["status"] == "completed" and task["results"] == done["results"]
    assert credits["reserved"] == 0  # settled before the callback left
    with pytest.raises(WebhookVerificationError):
        verify_callback(secret, hit.headers, hit.body.replace(b"completed", b"cancelled"))
    with pytest.raises(WebhookVerificationError):
        verify_callback("whsec_" + "A" * 44, hit.headers, hit.body)
    [delivery] = attempts(server, key, done["id"])
    assert delivery["status"] == "succeeded" and delivery["url"] == url
    assert [a["status_code"] for a in delivery["attempts"]] == [200]


def test_a_receiver_failing_twice_gets_three_attempts_1s_and_2s_apart(
    sender: Server, receiver: Receiver
) -> None:
    key = sender.key()
    url = receiver.url([500, 502, 200])
    done = end_task(sender, key, url)
    hits = receiver.wait_hits(url, 3)
    time.sleep(1.5)
    assert len(receiver.hits_for(url)) == 3
    gaps = [b.at - a.at for a, b in zip(hits, hits[1:], strict=False)]
    print(f"retry gaps after two failures: {[round(g, 2) for g in gaps]} s")
    assert 0.9 <= gaps[0] <= 1.8 and 1.9 <= gaps[1] <= 2.8, gaps
    assert len({hit.headers["webhook-id"] for hit in hits}) == 1
    assert len({hit.body for hit in hits}) == 1
    [delivery] = attempts(sender, key, done["id"])
    assert delivery["status"] == "succeeded"
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 502, 200]
    assert [a["error"] for a in delivery["attempts"]] == ["HTTP 500", "HTTP 502", None]


def test_a_receiver_that_always_fails_gets_four_attempts_then_none(
    sender: Server, receiver: Receiver
) -> None:
    key = sender.key()
    url = receiver.url([503])
    done = end_task(sender, key, url)
    hits = receiver.wait_hits(url, 4, timeout=30)
    gaps = [round(b.at - a.at, 2) for a, b in zip(hits, hits[1:], strict=False)]
    print(f"retry gaps of a receiver that always fails: {gaps} s")
    assert [1.0, 2.0, 4.0] == pytest.approx(gaps, abs=0.7), gaps
    [delivery] = attempts(sender, key, done["id"])
    assert delivery["status"] == "failed" and delivery["next_attempt_at"] is None
    assert [a["number"] for a in delivery["attempts"]] == [1, 2, 3, 4]
    assert all(a["duration_ms"] >= 0 and a["started_at"] > 0 for a in delivery["attempts"])
    time.sleep(5)
    assert len(receiver.hits_for(url)) == 4


def test_nobody_listening_gets_four_recorded_connection_errors(sender: Server) -> None:
    key = sender.key()
    url = f"https://localhost:{free_port()}/hook"  # nothing listens there
    done = end_task(sender, key, url)
    [delivery] = attempts(sender, key, done["id"])
    assert delivery["status"] == "failed"
    assert len(delivery["attempts"]) == 4
    assert all(a["status_code"] is None and "Connect" in a["error"] for a in delivery["attempts"])


def test_a_receiver_that_hangs_is_cut_at_10_seconds(sender: Server, receiver: Receiver) -> None:
    key = sender.key()
    url = receiver.url(["hang", 200])
    done = end_task(sender, key, url)
    hits = receiver.wait_hits(url, 2, timeout=40)
    assert 10.5 <= hits[1].at - hits[0].at <= 12.5  # 10 s timeout, then 1 s wait
    [delivery] = attempts(sender, key, done["id"])
    first, second = delivery["attempts"]
    print(f"hanging receiver cut after {first['duration_ms'] / 1000:.2f} s")
    assert first["status_code"] is None and "timed out" in first["error"]
    assert 9.8 <= first["duration_ms"] / 1000 <= 11
    assert second["status_code"] == 200 and delivery["status"] == "succeeded"


def test_a_redirect_is_not_followed(sender: Server, receiver: Receiver) -> None:
    key = sender.key()
    url = receiver.url([302])
    done = end_task(sender, key, url)
    [delivery] = attempts(sender, key, done["id"])
    assert [a["status_code"] for a in delivery["attempts"]] == [302] * 4
    assert not [hit for hit in receiver.hits if hit.path == "/elsewhere"]


def test_cancelled_task_calls_back_with_its_error(server: Server, receiver: Receiver) -> None:
    key = server.key()
    url = receiver.url([200])
    with server.client(key) as client:
        task = client.post(
            "/v1/images/generations", json={**GOOD, "quality": "2K", "callback_url": url}
        ).json()
        while client.get(f"/v1/tasks/{task['id']}").json()["status"] == "pending":
            time.sleep(0.02)
        client.post(f"/v1/tasks/{task['id']}/cancel")
        [hit] = receiver.wait_hits(url, 1)
        assert hit.body == client.get(f"/v1/tasks/{task['id']}").content
    body = verify_callback(server_secret(server, key), hit.headers, hit.body)
    assert body["status"] == "cancelled" and body["error"]["code"] == "request_cancelled"


def server_secret(server: Server, key: str) -> str:
    with server.client(key) as client:
        return client.get("/v1/callbacks/secret").json()["secret"]


def test_redelivery_sends_the_same_message_again(sender: Server, receiver: Receiver) -> None:
    key = sender.key()
    url = receiver.url([200])
    done = end_task(sender, key, url)
    receiver.wait_hits(url, 1)
    attempts(sender, key, done["id"])
    with sender.client(key) as client:
        again = client.post(f"/v1/tasks/{done['id']}/callbacks/redeliver")
        assert again.status_code == 202, again.text
        assert again.json()["status"] == "pending"
    first, second = receiver.wait_hits(url, 2)
    assert first.body == second.body
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    deliveries = attempts(sender, key, done["id"])
    assert [d["status"] for d in deliveries] == ["succeeded", "succeeded"]


def test_rotated_secret_signs_from_then_on(sender: Server, receiver: Receiver) -> None:
    key = sender.key()
    old = server_secret(sender, key)
    assert server_secret(sender, key) == old
    with sender.client(key) as client:
        new = client.post("/v1/callbacks/secret/rotate").json()["secret"]
    assert new != old and new.startswith("whsec_")
    url = receiver.url([200])
    end_task(sender, key, url)
    [hit] = receiver.wait_hits(url, 1)
    verify_callback(new, hit.headers, hit.body)
    with pytest.raises(WebhookVerificationError):
        verify_callback(old, hit.headers, hit.body)


def test_a_host_name_resolving_to_an_internal_address_is_refused_at_send_time(
    sender: Server, receiver: Receiver
) -> None:
    """This machine's own name is not a literal address, so creation accepts it; at send
    time it resolves to an internal address and every attempt is refused, unsent."""
    name = socket.gethostname()
    resolved = {info[4][0] for info in socket.getaddrinfo(name, 443)}
    assert all(is_internal_address(ipaddress.ip_address(a.split("%")[0])) for a in resolved)
    key = sender.key()
    url = f"https://{name}:{receiver.port}/hook/rebind"
    done = end_task(sender, key, url)
    [delivery] = attempts(sender, key, done["id"])
    assert delivery["status"] == "failed"
    assert all(
        a["status_code"] is None and a["error"].startswith("refused") for a in delivery["attempts"]
    )
    assert not [hit for hit in receiver.hits if hit.path == "/hook/rebind"]


def test_redeliver_and_callbacks_answer_errors_in_the_contract_shape(api_server: Server) -> None:
    key = api_server.key()
    with api_server.client(key) as client:
        pending = client.post(
            "/v1/images/generations", json={**GOOD, "callback_url": "https://example.com/hook"}
        ).json()
        plain = client.post("/v1/images/generations", json=GOOD).json()
        not_done = client.post(f"/v1/tasks/{pending['id']}/callbacks/redeliver")
        assert not_done.status_code == 409
        assert not_done.json()["error"]["code"] == "task_not_finished"
        client.post(f"/v1/tasks/{plain['id']}/cancel")
        none = client.post(f"/v1/tasks/{plain['id']}/callbacks/redeliver")
        assert none.status_code == 409 and none.json()["error"]["code"] == "no_callback_url"
        assert client.get(f"/v1/tasks/{pending['id']}/callbacks").json() == {
            "object": "list",
            "data": [],
        }
        assert client.get("/v1/tasks/bad/callbacks").json()["error"]["code"] == "invalid_task_id"
    with api_server.client(api_server.key()) as stranger:
        assert stranger.get(f"/v1/tasks/{pending['id']}/callbacks").status_code == 404
        assert stranger.post(f"/v1/tasks/{pending['id']}/callbacks/redeliver").status_code == 404
    assert httpx.get(f"{api_server.url}/v1/callbacks/secret").status_code == 401


def test_a_crash_between_the_end_and_the_callback_still_delivers_exactly_once(
    backend: tuple[str, Path],
    callback_tls: tuple[Path, Path, Path],
    receiver: Receiver,
    weights_cache: Path,
    tmp_path: Path,
) -> None:
    """The task ends while no sender runs (dispatch off), the process is killed, and the
    restarted one finds the delivery in the outbox."""
    database, drop = new_database(backend, tmp_path, "crash.db")
    env = callback_env(callback_tls)
    first = start_server(
        tmp_path / "a",
        database,
        weights_cache,
        embedded_worker=False,
        extra_env={**env, "KREASERVE_CALLBACK_DISPATCH": "false"},
    )
    try:
        key = first.key()
        url = receiver.url([200])
        done = end_task(first, key, url)
        time.sleep(0.5)
        assert receiver.hits_for(url) == []
        first.api.stop(signal.SIGKILL)
    finally:
        first.stop()
    second = start_server(
        tmp_path / "b",
        database,
        weights_cache,
        embedded_worker=False,
        extra_env=env,
        data_dir=first.data_dir,
    )
    try:
        [hit] = receiver.wait_hits(url, 1)
        time.sleep(2)
        assert len(receiver.hits_for(url)) == 1
        with second.client(key) as client:
            assert hit.body == client.get(f"/v1/tasks/{done['id']}").content
    finally:
        second.stop()
        if drop:
            drop()


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_two_api_processes_on_one_database_send_each_callback_once(
    backend: tuple[str, Path],
    callback_tls: tuple[Path, Path, Path],
    receiver: Receiver,
    weights_cache: Path,
    tmp_path: Path,
) -> None:
    """Twelve tasks end, half through each of two API processes on one database; both
    processes' senders claim from the one outbox, and each callback is sent once."""
    database, drop = make_postgres_database(POSTGRES_URL)
    env = callback_env(callback_tls)
    servers = [
        start_server(tmp_path / name, database, weights_cache, embedded_worker=False, extra_env=env)
        for name in ("a", "b")
    ]
    try:
        key = servers[0].key()
        urls = [receiver.url([200]) for _ in range(12)]
        for number, url in enumerate(urls):
            end_task(servers[number % 2], key, url)
        for url in urls:
            receiver.wait_hits(url, 1)
        time.sleep(2)
        assert [len(receiver.hits_for(url)) for url in urls] == [1] * len(urls)
    finally:
        for server in servers:
            server.stop()
        drop()


def test_the_create_requests_traceparent_reaches_the_callback(
    server: Server, receiver: Receiver
) -> None:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    traced, plain = receiver.url([200]), receiver.url([200])
    with server.client(server.key()) as client:
        created = [
            client.post(
                "/v1/images/generations", json={**GOOD, "callback_url": url}, headers=headers
            ).json()
            for url, headers in (
                (traced, {"traceparent": f"00-{trace_id}-{parent}-01"}),
                (plain, {}),
            )
        ]
        for task in created:
            wait_until_done(client, task["id"])
    [hit] = receiver.wait_hits(traced, 1)
    version, sent_trace, sent_parent, flags = hit.headers["traceparent"].split("-")
    assert (version, sent_trace, flags) == ("00", trace_id, "01")
    assert len(sent_parent) == 16 and sent_parent != parent  # the callback is its own span
    [untraced] = receiver.wait_hits(plain, 1)
    assert "traceparent" not in untraced.headers
    scraped = httpx.get(f"{server.url}/metrics").text
    delivered = [
        line
        for line in scraped.splitlines()
        if line.startswith("kreaserve_callback_attempts_total{")
        and 'outcome="delivered"' in line
        and 'attempt="1"' in line
    ]
    assert delivered and float(delivered[0].split()[-1]) >= 2
