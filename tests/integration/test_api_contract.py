"""The request side of the contract over real HTTP, on SQLite and PostgreSQL.

The server here runs without a worker, so every created task stays pending and the
queue's states are deterministic."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from kreaserve import contract, ledger
from tests.conftest import Server, refused_within

GOOD = {"model": "krea-2-turbo", "prompt": "a red fox in snow"}


def assert_error(
    response: httpx.Response,
    status: int,
    type_: str,
    code: str | None = None,
    param: str | None = None,
) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["type"] == type_
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["code"], str) and error["code"]
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error.get("param") == param, error
    return error


def balance(server: Server, key: str) -> dict:
    with server.client(key) as client:
        return client.get("/v1/credits").json()


def task_count(server: Server, key: str) -> int:
    """The tasks of `key`'s account (the server is shared with the run's other tests)."""
    with server.client(key) as client:
        listed = client.get("/v1/tasks", params={"limit": 100})
    assert listed.status_code == 200, listed.text
    return len(listed.json()["data"])


# --- authentication ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer ks_not-a-real-key"},
        {"Authorization": "Bearer two words"},
        {"Authorization": "ks_missing-scheme"},
    ],
)
def test_missing_or_wrong_key_is_401(api_server: Server, headers: dict) -> None:
    for method, path in [
        ("POST", "/v1/images/generations"),
        ("GET", "/v1/credits"),
        ("GET", "/v1/tasks/task-unified-1-abcdefgh"),
        ("POST", "/v1/tasks/task-unified-1-abcdefgh/cancel"),
    ]:
        response = httpx.request(method, api_server.url + path, headers=headers, json=GOOD)
        assert_error(response, 401, "authentication_error")


def test_a_key_revoked_in_the_database_stops_within_the_cache_bound(api_server: Server) -> None:
    """Revoked by `kreaserve keys revoke` (straight in the database): refused within
    KREASERVE_AUTH_CACHE_SECONDS (2 s), though the server had the key cached."""
    from kreaserve import accounts
    from kreaserve.config import Settings

    account_id, key = api_server.account()
    with api_server.client(key) as client:
        assert client.get("/v1/credits").status_code == 200
        with api_server.database().transaction() as session:
            assert accounts.revoke_key(session, key[: accounts.SHOWN_PREFIX_LEN])
        revoked = time.monotonic()
        bound = Settings().auth_cache_seconds + 0.5
        refused_within(lambda: client.get("/v1/credits"), revoked, bound)
        assert_error(client.get("/v1/credits"), 401, "authentication_error", "invalid_api_key")


def test_only_a_hash_of_the_key_is_stored(api_server: Server) -> None:
    from sqlalchemy import select

    from kreaserve.db.models import ApiKey

    _, key = api_server.account()
    with api_server.database().transaction() as session:
        stored = [
            tuple(row)
            for row in session.execute(select(ApiKey)).scalars().all()
            for row in [(row.key_hash, row.prefix, row.name)]
        ]
    assert all(key not in value for row in stored for value in row)


# --- create: the happy path ----------------------------------------------------------------


def test_create_answers_exactly_the_contract_shape(api_server: Server) -> None:
    key = api_server.key()
    before = int(time.time())
    with api_server.client(key) as client:
        response = client.post(
            "/v1/images/generations", json={**GOOD, "size": "16:9", "quality": "2K", "seed": 7}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    for name in (
        "created",
        "id",
        "model",
        "object",
        "progress",
        "status",
        "task_info",
        "type",
        "usage",
    ):
        assert name in body, name
    assert before <= body["created"] <= time.time() + 1
    assert re.fullmatch(rf"task-unified-{body['created']}-[a-z0-9]{{8}}", body["id"])
    assert body["model"] == "krea-2-turbo"
    assert body["object"] == "image.generation.task"
    assert body["progress"] == 0
    assert body["status"] == "pending"
    assert body["type"] == "image"
    assert body["task_info"]["can_cancel"] is True
    assert isinstance(body["task_info"]["estimated_time"], int)
    assert body["task_info"]["estimated_time"] >= 1
    assert body["usage"] == {
        "billing_rule": "per_call",
        "credits_reserved": 1.8,
        "user_group": "default",
    }
    assert body["seed"] == 7


def test_defaults_are_1_1_1k_and_a_server_chosen_seed(api_server: Server) -> None:
    from kreaserve.db.models import Task

    key = api_server.key()
    with api_server.client(key) as client:
        first = client.post("/v1/images/generations", json=GOOD).json()
        zero = client.post("/v1/images/generations", json={**GOOD, "seed": 0}).json()
        null = client.post("/v1/images/generations", json={**GOOD, "seed": None}).json()
    assert first["usage"]["credits_reserved"] == 0.45
    with api_server.database().transaction() as session:
        for body in (first, zero, null):
            task = session.get(Task, body["id"])
            assert (task.size, task.quality, task.width, task.height) == ("1:1", "1K", 1024, 1024)
            assert 1 <= task.seed <= contract.SEED_MAX
            assert body["seed"] == task.seed
    assert len({first["seed"], zero["seed"], null["seed"]}) == 3


def test_unknown_fields_are_ignored(api_server: Server) -> None:
    with api_server.client(api_server.key()) as client:
        response = client.post(
            "/v1/images/generations",
            json={**GOOD, "n": 4, "style": {"x": 1}, "negative_prompt": "x"},
        )
    assert response.status_code == 200, response.text


def test_ids_are_unique_and_not_sequential(api_server: Server) -> None:
    with api_server.client(api_server.key(credits=100)) as client:
        ids = [client.post("/v1/images/generations", json=GOOD).json()["id"] for _ in range(20)]
    suffixes = [task_id.rsplit("-", 1)[1] for task_id in ids]
    assert len(set(ids)) == 20 and len(set(suffixes)) == 20


@pytest.mark.parametrize("size", contract.SIZES)
@pytest.mark.parametrize("quality", contract.QUALITIES)
def test_every_size_and_quality_is_accepted_and_stored_with_its_pixels(
    api_server: Server, size: str, quality: str
) -> None:
    from kreaserve.db.models import Task

    with api_server.client(api_server.key()) as client:
        body = client.post(
            "/v1/images/generations", json={**GOOD, "size": size, "quality": quality}
        ).json()
    assert body["usage"]["credits_reserved"] == (0.45 if quality == "1K" else 1.8)
    with api_server.database().transaction() as session:
        task = session.get(Task, body["id"])
        assert (task.width, task.height) == contract.PIXELS[(size, quality)]


# --- create: every bad input ---------------------------------------------------------------

BAD_FIELDS = [
    # (field, value, code)
    ("model", None, "missing_required_parameter"),
    ("model", "krea-3", "invalid_model"),
    ("model", "", "invalid_model"),
    ("model", 1, "invalid_model"),
    ("model", ["krea-2-turbo"], "invalid_model"),
    ("prompt", None, "missing_required_parameter"),
    ("prompt", "", "invalid_prompt"),
    ("prompt", "   \n\t ", "invalid_prompt"),
    ("prompt", 42, "invalid_prompt"),
    ("prompt", ["a fox"], "invalid_prompt"),
    ("prompt", {"text": "a fox"}, "invalid_prompt"),
    ("prompt", "a\x00fox", "invalid_prompt"),
    ("prompt", "fox " * 641, "prompt_too_long"),
    ("prompt", "x" * 200_000, "prompt_too_long"),
    ("size", "1:3", "invalid_size"),
    ("size", "16x9", "invalid_size"),
    ("size", "", "invalid_size"),
    ("size", "16:9 ", "invalid_size"),
    ("size", 1.5, "invalid_size"),
    ("size", ["1:1"], "invalid_size"),
    ("quality", "4K", "invalid_quality"),
    ("quality", "1k", "invalid_quality"),
    ("quality", "", "invalid_quality"),
    ("quality", 1, "invalid_quality"),
    ("seed", -1, "invalid_seed"),
    ("seed", 1_048_577, "invalid_seed"),
    ("seed", 10**30, "invalid_seed"),
    ("seed", "7", "invalid_seed"),
    ("seed", 7.5, "invalid_seed"),
    ("seed", 7.0, "invalid_seed"),
    ("seed", True, "invalid_seed"),
    ("seed", [7], "invalid_seed"),
    ("output_format", "gif", "invalid_output_format"),
    ("output_format", "PNG", "invalid_output_format"),
    ("output_format", "jpg", "invalid_output_format"),
    ("output_format", 1, "invalid_output_format"),
    ("output_quality", 0, "invalid_output_quality"),
    ("output_quality", 101, "invalid_output_quality"),
    ("output_quality", 90.0, "invalid_output_quality"),
    ("output_quality", "90", "invalid_output_quality"),
    ("output_quality", True, "invalid_output_quality"),
    ("nsfw_check", "true", "invalid_nsfw_check"),
    ("nsfw_check", 1, "invalid_nsfw_check"),
    ("nsfw_check", "yes", "invalid_nsfw_check"),
    ("callback_url", "http://example.com/hook", "invalid_callback_url"),
    ("callback_url", "ftp://example.com/hook", "invalid_callback_url"),
    ("callback_url", "example.com/hook", "invalid_callback_url"),
    ("callback_url", "https://", "invalid_callback_url"),
    ("callback_url", "https://user:pw@example.com/hook", "invalid_callback_url"),
    ("callback_url", "https://example.com/" + "a" * 2030, "invalid_callback_url"),
    ("callback_url", "https://127.0.0.1/hook", "invalid_callback_url"),
    ("callback_url", "https://10.1.2.3/hook", "invalid_callback_url"),
    ("callback_url", "https://192.168.0.1/hook", "invalid_callback_url"),
    ("callback_url", "https://172.16.5.4/hook", "invalid_callback_url"),
    ("callback_url", "https://169.254.169.254/latest", "invalid_callback_url"),
    ("callback_url", "https://[::1]/hook", "invalid_callback_url"),
    ("callback_url", "https://[::ffff:127.0.0.1]/hook", "invalid_callback_url"),
    ("callback_url", "https://localhost/hook", "invalid_callback_url"),
    ("callback_url", "https://2130706433/", "invalid_callback_url"),
    ("callback_url", "https://0x7f000001/", "invalid_callback_url"),
    ("callback_url", "https://0177.0.0.1/", "invalid_callback_url"),
    ("callback_url", "https://127.1/", "invalid_callback_url"),
    ("callback_url", "https://0x7f.1/", "invalid_callback_url"),
    ("callback_url", "https://127.0.0.1./", "invalid_callback_url"),
    ("callback_url", "https://LOCALHOST/", "invalid_callback_url"),
    ("callback_url", "https://localhost./", "invalid_callback_url"),
    ("callback_url", "https://api.localhost/", "invalid_callback_url"),
    ("callback_url", "https://１２７.０.０.１/", "invalid_callback_url"),
    ("callback_url", "https://127。0。0。1/", "invalid_callback_url"),
    ("callback_url", "https://%31%32%37.0.0.1/", "invalid_callback_url"),
    ("callback_url", "https://[::ffff:7f00:1]/", "invalid_callback_url"),
    ("callback_url", "https://[0:0:0:0:0:ffff:127.0.0.1]/", "invalid_callback_url"),
    ("callback_url", "https://[::]/", "invalid_callback_url"),
    ("callback_url", "https://[64:ff9b::7f00:1]/", "invalid_callback_url"),
    ("callback_url", "https://[2002:7f00:1::]/", "invalid_callback_url"),
    ("callback_url", "https://[fe80::1%25eth0]/", "invalid_callback_url"),
    ("callback_url", "https://[fc00::1]/", "invalid_callback_url"),
    ("callback_url", "https://0.0.0.0/", "invalid_callback_url"),
    ("callback_url", "https://0/", "invalid_callback_url"),
    ("callback_url", "https://100.64.0.1/", "invalid_callback_url"),
    ("callback_url", "https://198.18.0.1/", "invalid_callback_url"),
    ("callback_url", "https://192.0.0.8/", "invalid_callback_url"),
    ("callback_url", "https://224.0.0.1/", "invalid_callback_url"),
    ("callback_url", "https://255.255.255.255/", "invalid_callback_url"),
    ("callback_url", "https://[ff02::1]/", "invalid_callback_url"),
    ("callback_url", "https://@example.com/", "invalid_callback_url"),
    ("callback_url", "https://user:@example.com/", "invalid_callback_url"),
    ("callback_url", 5, "invalid_callback_url"),
]


@pytest.mark.parametrize(
    ("field", "value", "code"), BAD_FIELDS, ids=[f"{f}-{str(v)[:20]!r}" for f, v, _ in BAD_FIELDS]
)
def test_bad_field_is_400_naming_it_and_stores_nothing(
    api_server: Server, field: str, value: object, code: str
) -> None:
    key = api_server.key(credits=10)
    body = dict(GOOD)
    if value is None:
        del body[field]
    else:
        body[field] = value
    with api_server.client(key) as client:
        response = client.post("/v1/images/generations", json=body)
        assert_error(response, 400, "invalid_request_error", code, param=field)
        credits = client.get("/v1/credits").json()
    assert credits["reserved"] == 0 and credits["available"] == 10
    assert task_count(api_server, key) == 0


def test_callback_url_of_exactly_2048_characters_is_accepted(api_server: Server) -> None:
    url = "https://example.com/" + "a" * (2048 - len("https://example.com/"))
    with api_server.client(api_server.key()) as client:
        response = client.post("/v1/images/generations", json={**GOOD, "callback_url": url})
    assert response.status_code == 200, response.text


def test_prompt_of_exactly_640_tokens_is_accepted(api_server: Server) -> None:
    from kreaserve.tokens import count_tokens

    prompt = "fox " * 640
    while count_tokens(prompt) > 640:
        prompt = prompt[:-4]
    assert count_tokens(prompt) == 640
    with api_server.client(api_server.key()) as client:
        ok = client.post("/v1/images/generations", json={**GOOD, "prompt": prompt})
        over = client.post("/v1/images/generations", json={**GOOD, "prompt": prompt + " fox"})
    assert ok.status_code == 200, ok.text
    assert_error(over, 400, "invalid_request_error", "prompt_too_long", "prompt")


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"not json",
        b"",
        b"   ",
        b"[1, 2]",
        b'"a string"',
        b"null",
        b"42",
        b'{"model": "krea-2-turbo", "prompt": "x",}',
        b"\xff\xfe\x00",
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_malformed_json_is_400(api_server: Server, raw: bytes) -> None:
    key = api_server.key()
    with api_server.client(key) as client:
        response = client.post(
            "/v1/images/generations", content=raw, headers={"Content-Type": "application/json"}
        )
    assert_error(response, 400, "invalid_request_error", "invalid_json")
    assert task_count(api_server, key) == 0


def test_body_over_1_mib_is_413(api_server: Server) -> None:
    key = api_server.key()
    big = json.dumps({**GOOD, "padding": "x" * (1024 * 1024)}).encode()
    with api_server.client(key) as client:
        assert_error(
            client.post(
                "/v1/images/generations", content=big, headers={"Content-Type": "application/json"}
            ),
            413,
            "request_too_large_error",
        )

        def chunks():  # no Content-Length: the limit must hold for a streamed body too
            for _ in range(20):
                yield b"x" * 65536

        assert_error(
            client.post(
                "/v1/images/generations",
                content=chunks(),
                headers={"Content-Type": "application/json"},
            ),
            413,
            "request_too_large_error",
        )
        assert client.get("/v1/credits").json()["reserved"] == 0


def test_insufficient_credits_is_402_and_reserves_nothing(api_server: Server) -> None:
    key = api_server.key(credits=1.0)
    with api_server.client(key) as client:
        assert (
            client.post("/v1/images/generations", json={**GOOD, "quality": "1K"}).status_code == 200
        )  # 0.45
        assert_error(
            client.post("/v1/images/generations", json={**GOOD, "quality": "2K"}),
            402,
            "insufficient_quota_error",
        )
        assert client.post("/v1/images/generations", json=GOOD).status_code == 200  # 0.90
        assert_error(
            client.post("/v1/images/generations", json=GOOD), 402, "insufficient_quota_error"
        )
        credits = client.get("/v1/credits").json()
    assert credits == {
        "object": "credit_balance",
        "balance": 1.0,
        "reserved": 0.9,
        "available": 0.1,
        "user_group": "default",
    }


# --- query and cancel ----------------------------------------------------------------------


@pytest.mark.parametrize("task_id", ["abc", "task-123", "TASK-UNIFIED-1-abcdefgh", "1"])
def test_malformed_task_id_is_400_invalid_task_id(api_server: Server, task_id: str) -> None:
    with api_server.client(api_server.key()) as client:
        for response in (
            client.get(f"/v1/tasks/{task_id}"),
            client.post(f"/v1/tasks/{task_id}/cancel"),
        ):
            assert_error(response, 400, "invalid_request_error", "invalid_task_id", "task_id")


def test_unknown_and_foreign_tasks_are_404(api_server: Server) -> None:
    owner, stranger = api_server.key(), api_server.key()
    with api_server.client(owner) as client:
        task = client.post("/v1/images/generations", json=GOOD).json()
        assert client.get(f"/v1/tasks/{task['id']}").status_code == 200
    with api_server.client(stranger) as client:
        for task_id in (task["id"], "task-unified-1751280000-zzzzzzzz", "task-unified-x"):
            assert_error(client.get(f"/v1/tasks/{task_id}"), 404, "not_found_error")
            assert_error(client.post(f"/v1/tasks/{task_id}/cancel"), 404, "not_found_error")
    with api_server.client(owner) as client:  # the stranger's cancel did nothing
        assert client.get(f"/v1/tasks/{task['id']}").json()["status"] == "pending"


def test_query_of_a_pending_task(api_server: Server) -> None:
    with api_server.client(api_server.key()) as client:
        created = client.post("/v1/images/generations", json=GOOD).json()
        body = client.get(f"/v1/tasks/{created['id']}").json()
    assert {k: body[k] for k in ("created", "id", "model", "object", "type")} == {
        k: created[k] for k in ("created", "id", "model", "object", "type")
    }
    assert body["status"] == "pending" and body["progress"] == 0
    assert body["task_info"]["can_cancel"] is True
    assert "results" not in body and "error" not in body


def test_estimated_time_grows_with_the_queue_ahead(api_server: Server) -> None:
    with api_server.client(api_server.key(credits=100)) as client:
        estimates = [
            client.post("/v1/images/generations", json=GOOD).json()["task_info"]["estimated_time"]
            for _ in range(4)
        ]
    assert estimates == sorted(estimates) and estimates[-1] > estimates[0]


def test_cancel_pending_task_releases_credits_at_once(api_server: Server) -> None:
    key = api_server.key(credits=5)
    with api_server.client(key) as client:
        task = client.post("/v1/images/generations", json={**GOOD, "quality": "2K"}).json()
        assert client.get("/v1/credits").json()["reserved"] == 1.8
        cancelled = client.post(f"/v1/tasks/{task['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        body = cancelled.json()
        assert body["status"] == "cancelled"
        assert body["task_info"]["can_cancel"] is False
        assert body["error"]["code"] == "request_cancelled"
        assert client.get(f"/v1/tasks/{task['id']}").json() == body
        credits = client.get("/v1/credits").json()
        assert credits["reserved"] == 0 and credits["balance"] == 5
        again = client.post(f"/v1/tasks/{task['id']}/cancel")  # idempotent
        assert again.status_code == 200 and again.json()["status"] == "cancelled"
    with api_server.database().transaction() as session:
        from kreaserve.db.models import Task

        account_id = session.get(Task, task["id"]).account_id
        assert ledger.balance_from_entries(session, account_id) == ledger.balance(
            session, account_id
        )


# --- everything else -----------------------------------------------------------------------


def test_unknown_route_and_wrong_method_use_the_error_shape(api_server: Server) -> None:
    with api_server.client(api_server.key()) as client:
        assert_error(client.get("/v1/nothing"), 404, "not_found_error")
        assert_error(client.get("/v1/images/generations"), 405, "invalid_request_error")


def test_healthz_is_up_and_readyz_says_no_engine(api_server: Server) -> None:
    assert httpx.get(f"{api_server.url}/healthz").json() == {"status": "ok"}
    response = httpx.get(f"{api_server.url}/readyz")
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "service_unavailable_error"
