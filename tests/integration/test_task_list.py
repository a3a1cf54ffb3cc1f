"""GET /v1/tasks over real HTTP on SQLite and PostgreSQL: the caller's own tasks, newest
first, cursor pages, a status filter, and 400s naming the bad parameter.

The server runs without a worker, so tasks stay pending unless cancelled."""

from __future__ import annotations

import httpx
import pytest

from kreaserve import task_list
from tests.conftest import Server
from tests.integration.test_api_contract import assert_error

GOOD = {"model": "krea-2-turbo", "prompt": "a lighthouse at dusk"}


def create(client: httpx.Client, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        response = client.post("/v1/images/generations", json=GOOD)
        assert response.status_code == 200, response.text
        ids.append(response.json()["id"])
    return ids


def all_pages(client: httpx.Client, **params: object) -> list[dict]:
    """Every page, following next_cursor; checks each page's own shape on the way."""
    pages, cursor = [], None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = client.get("/v1/tasks", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["object"] == "list"
        assert page["has_more"] is (page["next_cursor"] is not None)
        pages.append(page)
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 50, "pagination does not end"


def test_lists_own_tasks_newest_first_across_pages(api_server: Server) -> None:
    mine, theirs = api_server.key(), api_server.key()
    with api_server.client(mine) as client, api_server.client(theirs) as other:
        created = []
        for _ in range(3):  # interleaved with another account's creates
            created += create(client, 2)
            create(other, 1)
        pages = all_pages(client, limit=4)
        first = client.get(f"/v1/tasks/{created[-1]}").json()
    assert [len(page["data"]) for page in pages] == [4, 2]
    listed = [task["id"] for page in pages for task in page["data"]]
    assert listed == list(reversed(created))
    # Each entry is the task object of GET /v1/tasks/{id}, without the live estimate.
    newest = pages[0]["data"][0]
    first["task_info"].pop("estimated_time", None)
    assert newest == first


def test_default_page_is_twenty_and_limit_bounds_it(api_server: Server) -> None:
    with api_server.client(api_server.key()) as client:
        created = create(client, 22)
        default = client.get("/v1/tasks").json()
        one = client.get("/v1/tasks", params={"limit": 1}).json()
        everything = client.get("/v1/tasks", params={"limit": task_list.MAX_LIMIT}).json()
    assert len(default["data"]) == 20 and default["has_more"] is True
    assert [t["id"] for t in one["data"]] == [created[-1]] and one["has_more"] is True
    assert len(everything["data"]) == 22 and everything["has_more"] is False
    assert everything["next_cursor"] is None


def test_an_account_without_tasks_gets_an_empty_list(api_server: Server) -> None:
    with api_server.client(api_server.key()) as client:
        body = client.get("/v1/tasks").json()
    assert body == {"object": "list", "data": [], "has_more": False, "next_cursor": None}


def test_status_filter_pages_through_one_status(api_server: Server) -> None:
    with api_server.client(api_server.key()) as client:
        created = create(client, 5)
        for task_id in created[1::2]:
            assert client.post(f"/v1/tasks/{task_id}/cancel").status_code == 200
        cancelled = all_pages(client, status="cancelled", limit=1)
        pending = all_pages(client, status="pending")
        completed = all_pages(client, status="completed")
    assert [t["id"] for p in cancelled for t in p["data"]] == [created[3], created[1]]
    assert all(t["status"] == "cancelled" for p in cancelled for t in p["data"])
    assert [t["id"] for p in pending for t in p["data"]] == [created[4], created[2], created[0]]
    assert completed[0]["data"] == []


def test_a_cursor_never_reaches_another_accounts_tasks(api_server: Server) -> None:
    with api_server.client(api_server.key()) as mine, api_server.client(api_server.key()) as theirs:
        create(theirs, 3)
        create(mine, 2)
        their_cursor = theirs.get("/v1/tasks", params={"limit": 1}).json()["next_cursor"]
        # A cursor is a position, not a grant: with my key it pages through my tasks only.
        body = mine.get("/v1/tasks", params={"cursor": their_cursor}).json()
        their_ids = {t["id"] for t in theirs.get("/v1/tasks").json()["data"]}
    assert not their_ids & {t["id"] for t in body["data"]}


@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        ({"limit": "0"}, "limit", "invalid_limit"),
        ({"limit": "101"}, "limit", "invalid_limit"),
        ({"limit": "-1"}, "limit", "invalid_limit"),
        ({"limit": "ten"}, "limit", "invalid_limit"),
        ({"limit": "1.5"}, "limit", "invalid_limit"),
        ({"limit": "٣"}, "limit", "invalid_limit"),
        ({"limit": ""}, "limit", "invalid_limit"),
        ({"status": "done"}, "status", "invalid_status"),
        ({"status": ""}, "status", "invalid_status"),
        ({"cursor": "not-a-cursor"}, "cursor", "invalid_cursor"),
        ({"cursor": ""}, "cursor", "invalid_cursor"),
        ({"cursor": "MXxuYW58dGFzay11bmlmaWVkLTEtYWJjZGVmZ2g"}, "cursor", "invalid_cursor"),  # nan
        ({"cursor": "Mnw1LjB8dGFzay11bmlmaWVkLTEtYWJjZGVmZ2g"}, "cursor", "invalid_cursor"),  # v2
        ({"cursor": "MXw1LjB8eA"}, "cursor", "invalid_cursor"),  # not a task id
        ({"cursor": "é"}, "cursor", "invalid_cursor"),
        ({"cursor": "A" * 500}, "cursor", "invalid_cursor"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(
    api_server: Server, params: dict, param: str, code: str
) -> None:
    with api_server.client(api_server.key()) as client:
        response = client.get("/v1/tasks", params=params)
    assert_error(response, 400, "invalid_request_error", code, param)


def test_listing_needs_a_key(api_server: Server) -> None:
    response = httpx.get(f"{api_server.url}/v1/tasks", timeout=10)
    assert_error(response, 401, "authentication_error")
