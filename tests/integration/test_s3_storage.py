"""S3 result storage against a real S3 server (moto in server mode, over HTTP): links
that download with a plain HTTP client and end exactly at the result's expiry (proved
through their signed parameters), the sweep, the lifecycle rule, uploads cut short, and
the one-line refusals of `serve` and `worker` at start."""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
import pytest

from kreaserve import task_queue
from kreaserve.config import Settings
from kreaserve.db import Database
from kreaserve.maintenance import sweep_expired_results
from kreaserve.storage import ResultLinks, StorageError, open_storage, result_key
from kreaserve.storage.s3 import LIFECYCLE_RULE_ID, S3Storage
from tests.conftest import free_port, new_account
from tests.s3util import MotoServer, moto_server

PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(200_000)


def storage_for(s3: MotoServer, bucket: str, **options: object) -> S3Storage:
    return S3Storage(
        bucket,
        endpoint_url=s3.url,
        region=s3.region,
        access_key_id=s3.access_key,
        secret_access_key=s3.secret_key,
        **options,
    )  # type: ignore[arg-type]


@pytest.fixture
def bucket(s3_server: MotoServer) -> str:
    return s3_server.new_bucket()


@pytest.fixture
def store(s3_server: MotoServer, bucket: str) -> S3Storage:
    return storage_for(s3_server, bucket)


def sigv4_signature(url: str, secret: str) -> str:
    """The SigV4 query signature of a presigned GET, recomputed from the URL alone (the
    published algorithm, written out here as an independent check of boto3's)."""
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    params.pop("X-Amz-Signature")
    query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items())
    )
    canonical = "\n".join(
        ["GET", parts.path, query, f"host:{parts.netloc}\n", "host", "UNSIGNED-PAYLOAD"]
    )
    scope = params["X-Amz-Credential"].split("/", 1)[1]
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            params["X-Amz-Date"],
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = f"AWS4{secret}".encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def signed_end(url: str) -> int:
    """When a presigned URL stops working: its signed X-Amz-Date plus X-Amz-Expires."""
    params = dict(parse_qsl(urlsplit(url).query))
    start = datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return int(start.timestamp()) + int(params["X-Amz-Expires"])


# --- the store -----------------------------------------------------------------------------


def test_a_stored_image_downloads_through_its_presigned_link(store: S3Storage) -> None:
    key = result_key("task-unified-1-abcdefgh", 1)
    store.put(key, PNG)
    link = store.presigned_url(key, int(time.time()) + 3600)
    assert link and link.startswith(store.endpoint)
    answer = httpx.get(link)  # a plain HTTP client, no credentials
    assert answer.status_code == 200 and answer.content == PNG
    assert answer.headers["content-type"] == "image/png"
    assert store.path(key) is None


def test_a_link_ends_exactly_when_the_result_expires(
    store: S3Storage, s3_server: MotoServer
) -> None:
    """moto does not enforce expiry, so the proof is the signature: the link's end
    (X-Amz-Date + X-Amz-Expires) is the result's expiry, and those parameters are covered
    by a SigV4 signature made with the store's secret, so no one can stretch them."""
    key = result_key("task-unified-2-abcdefgh", 1)
    store.put(key, PNG)
    for ttl in (86400, 3600, 5):
        expires_at = int(time.time()) + ttl
        link = store.presigned_url(key, expires_at)
        assert link is not None
        assert expires_at - 1 <= signed_end(link) <= expires_at
        params = dict(parse_qsl(urlsplit(link).query))
        given = params["X-Amz-Signature"]
        assert sigv4_signature(link, s3_server.secret_key) == given
        lifetime = f"X-Amz-Expires={params['X-Amz-Expires']}&"
        stretched = link.replace(lifetime, f"X-Amz-Expires={ttl + 3600}&")
        assert stretched != link
        assert sigv4_signature(stretched, s3_server.secret_key) != given
    assert store.presigned_url(key, int(time.time()) - 1) is None


def test_links_are_signed_for_the_public_endpoint_when_it_differs(
    s3_server: MotoServer, bucket: str
) -> None:
    """Processes reach the store at one address (here a pass-through proxy), clients at
    another (the server itself): links name and are signed for the clients' one."""
    proxy = CuttingProxy(s3_server.url, cut=1 << 30)
    try:
        store = S3Storage(
            bucket,
            endpoint_url=proxy.url,
            public_endpoint_url=s3_server.url,
            region=s3_server.region,
            access_key_id=s3_server.access_key,
            secret_access_key=s3_server.secret_key,
        )
        key = result_key("task-unified-6-abcdefgh", 1)
        store.put(key, PNG)
        link = store.presigned_url(key, int(time.time()) + 60)
        assert link is not None and link.startswith(f"{s3_server.url}/{bucket}/results/")
        assert (
            sigv4_signature(link, s3_server.secret_key)
            == dict(parse_qsl(urlsplit(link).query))["X-Amz-Signature"]
        )
        assert httpx.get(link).content == PNG
    finally:
        proxy.close()


def test_result_links_are_direct_until_expiry_then_the_apis_expired_url(store: S3Storage) -> None:
    key = result_key("task-unified-3-abcdefgh", 1)
    direct = ResultLinks(store, "http://api.example", b"secret", direct=True)
    future = time.time() + 600
    [link] = direct.urls([key], future)
    assert link.startswith(store.endpoint) and signed_end(link) <= int(future)
    # Once expired there is nothing to presign: the API's URL answers 410.
    [gone] = direct.urls([key], time.time() - 1)
    assert gone.startswith("http://api.example/files/")
    [redirected] = ResultLinks(store, "http://api.example", b"secret", direct=False).urls(
        [key], future
    )
    assert redirected.startswith("http://api.example/files/")


def test_the_sweep_deletes_expired_objects_and_keeps_the_others(
    store: S3Storage, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    from kreaserve.db import upgrade

    upgrade(url)
    db = Database(url)
    account_id, _ = new_account(db)
    params = task_queue.NewTask(
        prompt="a fox", size="1:1", quality="1K", seed=1, nsfw_check=False, callback_url=None
    )
    keys = {}
    for ttl in (-1, 3600):  # one expired a second ago, one live for an hour
        task = task_queue.create(db, account_id, None, "default", params, 4500)
        claim = task_queue.claim(db, "w", 30)
        assert claim is not None and claim.task_id == task.id
        keys[ttl] = result_key(task.id, claim.attempts)
        store.put(keys[ttl], PNG)
        assert task_queue.complete(db, task.id, "w", [keys[ttl]], ttl, 1.0)
    assert sweep_expired_results(db, store) == 1
    assert not store.exists(keys[-1]) and store.exists(keys[3600])
    assert sweep_expired_results(db, store) == 0  # idempotent
    db.dispose()


def test_the_lifecycle_rule_is_added_beside_the_buckets_own_rules(
    store: S3Storage, bucket: str, s3_server: MotoServer
) -> None:
    client = s3_server.client()
    theirs = {
        "ID": "their-logs",
        "Filter": {"Prefix": "logs/"},
        "Status": "Enabled",
        "Expiration": {"Days": 30},
    }
    client.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": [theirs]}
    )
    assert store.ensure_lifecycle(86400)
    assert store.ensure_lifecycle(86400)  # a second start changes nothing
    rules = {
        rule["ID"]: rule
        for rule in client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    }
    assert set(rules) == {"their-logs", LIFECYCLE_RULE_ID}
    ours = rules[LIFECYCLE_RULE_ID]
    assert ours["Filter"] == {"Prefix": "results/"} and ours["Expiration"] == {"Days": 2}


def test_no_lifecycle_rule_over_a_whole_bucket(s3_server: MotoServer, bucket: str) -> None:
    assert not storage_for(s3_server, bucket, prefix="").ensure_lifecycle(86400)
    with pytest.raises(Exception, match="NoSuchLifecycleConfiguration"):
        s3_server.client().get_bucket_lifecycle_configuration(Bucket=bucket)


def test_open_storage_picks_s3_only_when_a_bucket_is_set(tmp_path: Path) -> None:
    assert open_storage(Settings(data_dir=tmp_path)).path("x/0.png") is None
    assert type(open_storage(Settings(data_dir=tmp_path))).__name__ == "LocalStorage"
    s3 = open_storage(Settings(data_dir=tmp_path, s3_bucket="b", s3_endpoint_url="http://x"))
    assert isinstance(s3, S3Storage) and s3.bucket == "b"


def test_a_ttl_past_seven_days_needs_redirect_links() -> None:
    with pytest.raises(ValueError, match="KREASERVE_S3_LINKS=redirect"):
        Settings(s3_bucket="b", result_ttl_seconds=8 * 86400)
    Settings(s3_bucket="b", result_ttl_seconds=8 * 86400, s3_links="redirect")


# --- uploads cut short, and outages --------------------------------------------------------


class CuttingProxy:
    """A TCP proxy in front of the S3 server that passes everything through, except that
    it forwards only the first `cut` bytes of any PUT request and then hangs up on both
    sides: an upload that dies half-way."""

    def __init__(self, upstream: str, cut: int) -> None:
        host, port = urlsplit(upstream).netloc.split(":")
        self.upstream, self.cut = (host, int(port)), cut
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        server = socket.create_connection(self.upstream)
        threading.Thread(target=self._pipe, args=(server, client), daemon=True).start()
        sent, put = 0, None
        try:
            while chunk := client.recv(65536):
                if put is None:
                    put = chunk.startswith(b"PUT ")
                if put and sent + len(chunk) > self.cut:
                    server.sendall(chunk[: self.cut - sent])
                    self.cuts += 1
                    break
                server.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        for end in (client, server):
            end.close()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                target.sendall(chunk)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()


def test_an_upload_cut_half_way_leaves_no_object(s3_server: MotoServer, bucket: str) -> None:
    proxy = CuttingProxy(s3_server.url, cut=len(PNG) // 2)
    try:
        direct = storage_for(s3_server, bucket)
        cut = S3Storage(
            bucket,
            endpoint_url=proxy.url,
            region=s3_server.region,
            access_key_id=s3_server.access_key,
            secret_access_key=s3_server.secret_key,
            max_attempts=2,
        )
        key = result_key("task-unified-4-abcdefgh", 1)
        with pytest.raises(StorageError, match="upload failed"):
            cut.put(key, PNG)
        assert proxy.cuts >= 1
        assert not direct.exists(key)  # asked of the server itself
    finally:
        proxy.close()


def test_a_store_that_went_away_raises_storage_error(tmp_path: Path) -> None:
    with moto_server(tmp_path) as gone:
        bucket = gone.new_bucket()
        store = storage_for(gone, bucket, max_attempts=1, connect_timeout=2)
        store.check()
    with pytest.raises(StorageError, match="upload failed"):
        store.put(result_key("task-unified-5-abcdefgh", 1), PNG)
    with pytest.raises(StorageError, match="delete failed"):
        store.delete(result_key("task-unified-5-abcdefgh", 1))


# --- refusals at start ----------------------------------------------------------------------


def start_and_fail(command: list[str], env: dict[str, str], tmp: Path) -> tuple[float, str]:
    """Run a kreaserve command that must refuse to start; (seconds, stderr)."""
    clock = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "kreaserve.cli", *command],
        env={
            **os.environ,
            "KREASERVE_DATA_DIR": str(tmp / "data"),
            "KREASERVE_PORT": str(free_port()),
            "KREASERVE_WEIGHTS": "tiny-random",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    return time.monotonic() - clock, done.stderr


@pytest.fixture(scope="module")
def s3_with_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_server(tmp_path_factory.mktemp("s3-auth"), auth=True) as server:
        server.new_bucket("kreaserve-results")
        yield server


CASES = {
    "missing bucket": (
        {"KREASERVE_S3_BUCKET": "no-such-bucket"},
        False,
        "S3 bucket 'no-such-bucket' at {url} does not exist: create it, or set "
        "KREASERVE_S3_BUCKET to an existing bucket",
    ),
    "wrong credentials": (
        {"KREASERVE_S3_BUCKET": "kreaserve-results", "AWS_SECRET_ACCESS_KEY": "not-the-secret"},
        True,
        "S3 bucket 'kreaserve-results' at {url} refused our credentials "
        "(HTTP 403): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    ),
    "unknown key": (
        {"KREASERVE_S3_BUCKET": "kreaserve-results", "AWS_ACCESS_KEY_ID": "AKIAUNKNOWNKEY000000"},
        True,
        "refused our credentials (HTTP 403)",
    ),
    "unreachable endpoint": (
        {
            "KREASERVE_S3_BUCKET": "kreaserve-results",
            "KREASERVE_S3_ENDPOINT_URL": "http://127.0.0.1:{port}",
        },
        False,
        "cannot reach the S3 endpoint http://127.0.0.1:{port} ",
    ),
}


@pytest.mark.parametrize("command", [["serve", "--no-worker"], ["worker"]])
@pytest.mark.parametrize("case", list(CASES))
def test_serve_and_worker_refuse_a_bad_store_in_one_line(
    case: str, command: list[str], s3_server: MotoServer, s3_with_auth: MotoServer, tmp_path: Path
) -> None:
    overrides, auth, expected = CASES[case]
    s3 = s3_with_auth if auth else s3_server
    port = free_port()
    env = {**s3.env, **{k: v.format(port=port) for k, v in overrides.items()}}
    seconds, stderr = start_and_fail(command, env, tmp_path)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    assert expected.format(url=s3.url, port=port) in lines[0]
    assert seconds < 30  # before any engine or server starts


def test_the_apis_redirect_hands_out_a_five_minute_link_then_410(
    s3_server: MotoServer, bucket: str, tmp_path: Path
) -> None:
    """KREASERVE_S3_LINKS=redirect: the task shows the API's signed URL; the API checks it
    and its expiry itself, then redirects to a presigned link of at most 5 minutes."""
    from fastapi.testclient import TestClient

    from kreaserve.api.app import create_app
    from kreaserve.db import upgrade

    url = f"sqlite:///{tmp_path / 'redirect.db'}"
    upgrade(url)
    settings = Settings(
        data_dir=tmp_path, database_url=url, secret_key="shared", s3_bucket=bucket,
        s3_endpoint_url=s3_server.url, s3_region=s3_server.region,
        s3_access_key_id=s3_server.access_key, s3_secret_access_key=s3_server.secret_key,
        s3_links="redirect", public_url="http://testserver",
    )  # fmt: skip
    db = Database(url)
    store = open_storage(settings)
    key = result_key("task-unified-7-abcdefgh", 1)
    store.put(key, PNG)
    links = ResultLinks.for_settings(settings, store, b"shared")
    [live] = links.urls([key], time.time() + 86400)
    [expired] = links.urls([key], time.time() - 1)
    client = TestClient(create_app(settings, db=db, storage=store))  # no lifespan needed
    answer = client.get(live.removeprefix("http://testserver"), follow_redirects=False)
    assert answer.status_code == 302 and answer.headers["cache-control"] == "no-store"
    location = answer.headers["location"]
    assert location.startswith(f"{s3_server.url}/{bucket}/results/")
    assert time.time() + 290 <= signed_end(location) <= time.time() + 301
    assert httpx.get(location).content == PNG
    gone = client.get(expired.removeprefix("http://testserver"), follow_redirects=False)
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "url_expired"
    forged = client.get(live.removeprefix("http://testserver")[:-4] + "0000")
    assert forged.status_code == 403
    db.dispose()
