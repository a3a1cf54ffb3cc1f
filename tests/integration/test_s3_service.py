"""A generating server that keeps results in S3 (a real moto server over HTTP): links go
straight to the store, end when the result expires and download with a plain HTTP
client; nothing touches the local disk; and when the store goes away mid-run the task
is retried, then fails `service_unavailable` with its credits released and its callback
sent, never charged and never left hanging."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kreaserve import ledger
from kreaserve.db.models import Task
from tests.conftest import Server, callback_env, start_server
from tests.integration.test_callbacks import Receiver
from tests.integration.test_generation import GOOD, fetch_image, wait_until_done
from tests.integration.test_s3_storage import signed_end
from tests.s3util import MotoServer, moto_server
from tests.tlsutil import https_server

#: The smallest 1K pixel count of the contract (1152x896; 1344x768 ties).
SMALL = {**GOOD, "size": "4:3"}


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """This module's own S3 server: the outage test stops it."""
    with moto_server(tmp_path_factory.mktemp("s3-service")) as server:
        yield server


@pytest.fixture(scope="module")
def receiver(callback_tls: tuple[Path, Path, Path]) -> Iterator[Receiver]:
    receiver = Receiver()
    with https_server(receiver.handler(), callback_tls[1], callback_tls[2]) as port:
        receiver.port = port
        yield receiver
        receiver.release.set()


@pytest.fixture(scope="module")
def server(
    s3: MotoServer,
    callback_tls: tuple[Path, Path, Path],
    weights_cache: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("s3-server")
    bucket = s3.new_bucket()
    env = {
        **s3.env,
        **callback_env(callback_tls),
        "KREASERVE_S3_BUCKET": bucket,
        "KREASERVE_WEIGHTS": "tiny-random",
    }
    running = start_server(
        tmp, f"sqlite:///{tmp / 'k.db'}", weights_cache, embedded_worker=True, extra_env=env
    )
    running.env["bucket"] = bucket
    yield running
    running.stop()


def test_results_live_in_the_bucket_behind_links_that_end_at_expiry(
    server: Server, s3: MotoServer
) -> None:
    account_id, key = server.account(credits=10)
    with server.client(key) as client:
        task_id = client.post("/v1/images/generations", json=SMALL).json()["id"]
        final = wait_until_done(client, task_id)[-1]
    assert final["status"] == "completed", final
    [link] = final["results"]
    assert link.startswith(f"{s3.url}/{server.env['bucket']}/results/{task_id}/")
    assert fetch_image(link).size == (1152, 896)  # a plain GET, no credentials
    with server.database().transaction() as session:
        task = session.get(Task, task_id)
        assert task is not None and task.results_expire_at is not None
        expires_at, finished_at = int(task.results_expire_at), task.finished_at
    assert expires_at - 1 <= signed_end(link) <= expires_at
    assert abs(expires_at - (finished_at + 86400)) <= 1
    assert not list((server.data_dir / "images").rglob("*.png"))  # nothing on local disk
    rules = s3.client().get_bucket_lifecycle_configuration(Bucket=server.env["bucket"])
    assert [rule["Filter"] for rule in rules["Rules"]] == [{"Prefix": "results/"}]


def test_a_webp_result_is_stored_and_linked_as_webp(server: Server, s3: MotoServer) -> None:
    _, key = server.account(credits=10)
    with server.client(key) as client:
        task_id = client.post(
            "/v1/images/generations", json={**SMALL, "output_format": "webp"}
        ).json()["id"]
        final = wait_until_done(client, task_id)[-1]
    assert final["status"] == "completed", final
    [link] = final["results"]
    assert link.split("?")[0].endswith(".webp"), link
    stored = s3.client().get_object(Bucket=server.env["bucket"], Key=f"results/{task_id}/1-0.webp")
    assert stored["ContentType"] == "image/webp"
    response = httpx.get(link, timeout=30)
    assert response.headers["content-type"] == "image/webp"
    assert response.content[8:12] == b"WEBP"


def test_a_store_outage_fails_the_task_unavailable_uncharged_with_its_callback(
    server: Server, s3: MotoServer, receiver: Receiver
) -> None:
    account_id, key = server.account(credits=10)
    s3.stop()  # the store goes away while the service runs
    hook = receiver.url([200])
    with server.client(key) as client:
        created = client.post("/v1/images/generations", json={**SMALL, "callback_url": hook})
        assert created.status_code == 200, created.text
        task_id = created.json()["id"]
        final = wait_until_done(client, task_id)[-1]
        credits = client.get("/v1/credits").json()
    assert final["status"] == "failed", final
    assert final["error"]["code"] == "service_unavailable"
    assert "results" not in final or not final["results"]
    with server.database().transaction() as session:
        task = session.get(Task, task_id)
        assert task is not None and task.attempts == 2  # retried once, then failed
        standing = ledger.balance(session, account_id)
    assert standing.balance_units == ledger.to_units(10) and standing.reserved_units == 0
    assert credits["balance"] == 10
    [hit] = receiver.wait_hits(hook, 1)
    body = json.loads(hit.body)
    assert body["id"] == task_id and body["error"]["code"] == "service_unavailable"
    assert "S3 upload failed" in server.api.output()  # the operator's log says why
