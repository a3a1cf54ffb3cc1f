"""Odd input a hostile tenant sends, against a real server on SQLite and PostgreSQL: every
request below answers the contract's 4xx error shape, never a 500, and the server logs
no unhandled error. (The property-based sweep over every operation is
tests/unit/test_no_server_errors.py; this file pins the cases the security review found.)"""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, Server

BIG_NUMBER = "1" * 5000
ODD_LIMITS = ["NaN", "Infinity", "-Infinity", "1e300", str(10**30), BIG_NUMBER]
ODD_TEXT = ["\ud800", "a\udfffb", "nul\u0000", "\u0000"]


def assert_contract_4xx(response: httpx.Response, *statuses: int) -> None:
    request = f"{response.request.method} {response.request.url}"
    assert 400 <= response.status_code < 500, (request, response.status_code, response.text)
    if statuses:
        assert response.status_code in statuses, (request, response.status_code, response.text)
    error = response.json()["error"]
    assert error["code"] and error["message"] and error["type"], (request, error)


@pytest.fixture(scope="module")
def admin(api_server: Server) -> httpx.Client:
    with httpx.Client(
        base_url=api_server.url, timeout=30, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as client:
        yield client


def obj(**fields: str) -> str:
    """A JSON object from the raw JSON texts of its values (so NaN, 1e300, 5,000 digits and
    escaped lone surrogates go out exactly as written)."""
    return "{" + ", ".join(f'"{name}": {value}' for name, value in fields.items()) + "}"


def raw_json(client: httpx.Client, method: str, path: str, text: str) -> httpx.Response:
    return client.request(
        method, path, content=text.encode(), headers={"content-type": "application/json"}
    )


@pytest.mark.parametrize("digit", ["%C2%B2", "%D9%A1", "%EF%BC%91", "%E2%91%A0"])
def test_unicode_digits_in_key_and_account_ids(
    api_server: Server, admin: httpx.Client, digit: str
) -> None:
    with api_server.client(api_server.key()) as client:
        for path in (f"/v1/keys/{digit}/revoke", f"/v1/keys/{digit}/rotate"):
            assert_contract_4xx(client.post(path), 400)
    assert_contract_4xx(admin.post(f"/admin/v1/keys/{digit}/revoke"), 400)
    for path in (f"/admin/v1/accounts/{digit}", f"/admin/v1/accounts/{digit}/keys"):
        assert_contract_4xx(admin.get(path), 400)
    assert_contract_4xx(raw_json(admin, "PATCH", f"/admin/v1/accounts/{digit}", "{}"), 400)


@pytest.mark.parametrize(
    "expires,signature",
    [
        ("²", "ab"),
        ("١", "ab"),
        ("1" * 5000, "ab"),
        ("99999999999", "é"),
        ("99999999999", "ab" * 5000),
        ("-1", "ab"),
        ("99999999999", "\u0000"),
    ],
)
def test_odd_expires_and_signature_on_files(
    api_server: Server, expires: str, signature: str
) -> None:
    response = httpx.get(
        f"{api_server.url}/files/task-unified-1-abc/0.png",
        params={"expires": expires, "signature": signature},
        timeout=30,
    )
    assert_contract_4xx(response, 403)


def test_a_5000_digit_json_number(api_server: Server, admin: httpx.Client) -> None:
    with api_server.client(api_server.key()) as client:
        body = obj(model='"krea-2-turbo"', prompt='"a fox"', seed=BIG_NUMBER)
        assert_contract_4xx(raw_json(client, "POST", "/v1/images/generations", body), 400)
        assert_contract_4xx(raw_json(client, "POST", "/v1/keys", obj(name=BIG_NUMBER)), 400)
    body = obj(name='"x"', credits=BIG_NUMBER)
    assert_contract_4xx(raw_json(admin, "POST", "/admin/v1/accounts", body), 400)


@pytest.mark.parametrize("value", ODD_LIMITS)
@pytest.mark.parametrize("field", ["requests_per_minute", "max_tasks_in_flight", "daily_spend_cap"])
def test_odd_numbers_in_admin_limits(
    api_server: Server, admin: httpx.Client, field: str, value: str
) -> None:
    account_id, _ = api_server.account()
    account = f"/admin/v1/accounts/{account_id}"
    assert_contract_4xx(raw_json(admin, "PATCH", account, obj(**{field: value})), 400)
    body = obj(name='"odd"', **{field: value})
    assert_contract_4xx(raw_json(admin, "POST", "/admin/v1/accounts", body), 400)
    body = obj(amount=value, note='"x"')
    assert_contract_4xx(raw_json(admin, "POST", f"{account}/credits", body), 400)
    assert admin.get(account).status_code == 200


@pytest.mark.parametrize(
    "query",
    [
        {"end": "0001-01-01"},
        {"end": "9999-12-31"},
        {"start": "0001-01-01"},
        {"start": "9999-12-31", "end": "9999-12-31"},
        {"start": "0001-01-01", "end": "0001-01-02"},
        {"end": "２０２６-01-01"},
    ],
)
def test_usage_at_the_ends_of_the_calendar(api_server: Server, query: dict[str, str]) -> None:
    with api_server.client(api_server.key()) as client:
        assert_contract_4xx(client.get("/v1/usage", params=query), 400)


@pytest.mark.parametrize("text", ODD_TEXT)
def test_lone_surrogates_and_nul_in_names_and_notes(
    api_server: Server, admin: httpx.Client, text: str
) -> None:
    account_id, key = api_server.account()
    encoded = json.dumps(text)  # "\ud800" stays an escape: valid JSON, not valid text
    with api_server.client(key) as client:
        assert_contract_4xx(raw_json(client, "POST", "/v1/keys", obj(name=encoded)), 400)
        listed = client.get("/v1/keys")
        assert listed.status_code == 200, listed.text
    account = f"/admin/v1/accounts/{account_id}"
    for method, path, body in (
        ("POST", "/admin/v1/accounts", obj(name=encoded)),
        ("POST", f"{account}/keys", obj(name=encoded)),
        ("PATCH", account, obj(user_group=encoded)),
        ("POST", f"{account}/credits", obj(amount="1", note=encoded)),
        ("POST", "/admin/v1/accounts", "{" + encoded + ': "x", "name": "n"}'),  # as a name
    ):
        assert_contract_4xx(raw_json(admin, method, path, body), 400)
    assert admin.get("/admin/v1/accounts").status_code == 200
    assert admin.get(f"/admin/v1/accounts/{account_id}/keys").status_code == 200


@pytest.mark.parametrize(
    "task_id",
    [
        "task-unified-%00",
        "task-unified-1-%00abc",
        "task-unified-%ED%A0%80",
        "task-unified-" + "x" * 5000,
    ],
)
def test_odd_task_ids(api_server: Server, task_id: str) -> None:
    with api_server.client(api_server.key()) as client:
        for method, path in (
            ("GET", ""),
            ("POST", "/cancel"),
            ("GET", "/callbacks"),
            ("POST", "/callbacks/redeliver"),
        ):
            assert_contract_4xx(client.request(method, f"/v1/tasks/{task_id}{path}"), 400, 404)


def test_a_client_that_disconnects_mid_body(api_server: Server) -> None:
    port = int(api_server.url.rsplit(":", 1)[1])
    key = api_server.key()
    for path in ("/v1/images/generations", "/v1/keys"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                '{"model": "krea'.encode()
            )
            time.sleep(0.3)
    time.sleep(1.0)
    with api_server.client(key) as client:
        assert client.get("/v1/credits").status_code == 200


def test_no_unhandled_error_was_logged(api_server: Server) -> None:
    """Runs last in this module: nothing above left a traceback in the server's log."""
    log = api_server.api.output()
    assert "unhandled error" not in log and "Traceback" not in log, log[-6000:]
