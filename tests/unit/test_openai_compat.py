"""The OpenAI request mapping (kreaserve/openai_compat.py): `WxH` sizes to the table's
nearest ratio and tier or a refusal, `quality` without a size, and the request model's
bounds; and, in-process without a worker, the /openai/ routes' failure paths in OpenAI's
error shape: bad input, a bad key, the wait's time-out, a refusal part way through `n`,
a task that failed. The successes, with the `openai` package over real HTTP, are in
tests/integration/test_openai_clients.py."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from pydantic import ValidationError

from kreaserve import contract, task_queue
from kreaserve.api.app import create_app
from kreaserve.api.errors import APIError
from kreaserve.api.routes.openai import images_of
from kreaserve.config import Settings
from kreaserve.db import Database, upgrade
from kreaserve.db.models import Account, Task
from kreaserve.openai_compat import ImagesRequest, SizeError, map_size
from tests.conftest import new_account
from tests.unit.test_request_cost import AllowAll


@pytest.mark.parametrize(
    ("size", "quality", "expected"),
    [
        ("1024x1024", None, ("1:1", "1K")),
        ("256x256", None, ("1:1", "1K")),
        ("512x512", "hd", ("1:1", "1K")),  # a size decides the tier, not quality
        ("2048x2048", None, ("1:1", "2K")),
        ("1792x1024", None, ("16:9", "1K")),  # DALL-E 3's wide size, ratio 1.75
        ("1024x1792", None, ("9:16", "1K")),
        ("1536x1024", None, ("3:2", "1K")),  # gpt-image-1's landscape
        ("1024x1536", None, ("2:3", "1K")),
        ("2688x1472", None, ("16:9", "2K")),
        ("1280x960", None, ("4:3", "1K")),
        ("1250x1000", None, ("5:4", "1K")),
        (None, None, ("1:1", "1K")),
        ("auto", "high", ("1:1", "2K")),
        (None, "hd", ("1:1", "2K")),
        (None, "standard", ("1:1", "1K")),
    ],
)
def test_sizes_map_to_the_nearest_ratio_and_tier(
    size: str | None, quality: str | None, expected: tuple[str, str]
) -> None:
    assert map_size(size, quality) == expected
    assert expected in contract.PIXELS


@pytest.mark.parametrize(
    "size", ["1024", "1024x", "x1024", "axb", "1024*1024", "0x0", "32x32", "8192x8192", "3000x1000"]
)
def test_sizes_without_a_near_entry_are_refused(size: str) -> None:
    with pytest.raises(SizeError):
        map_size(size, None)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "x", "n": 0}, "n"),
        ({"prompt": "x", "n": 5}, "n"),
        ({"prompt": "x", "n": "2"}, "n"),
        ({"prompt": "x", "response_format": "png"}, "response_format"),
    ],
)
def test_request_bounds(body: dict, param: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ImagesRequest.model_validate(body)
    assert caught.value.errors()[0]["loc"][0] == param


def test_unknown_openai_fields_are_ignored() -> None:
    body = ImagesRequest.model_validate(
        {"prompt": "x", "style": "vivid", "user": "u-1", "background": "auto", "moderation": "low"}
    )
    assert body.n == 1 and body.response_format == "url" and body.model == contract.MODEL


@pytest.fixture(scope="module")
def app_and_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, str]:
    tmp = tmp_path_factory.mktemp("openai")
    url = f"sqlite:///{tmp / 'openai.db'}"
    upgrade(url)
    settings = Settings(
        data_dir=tmp, database_url=url, secret_key="openai", openai_wait_seconds=0.3
    )
    db = Database(url)
    app = create_app(settings, db=db)
    app.state.services.moderator = AllowAll()
    return app, new_account(db, credits=10)[1]


def post(app: object, key: str, body: object, path: str = "/openai/v1/images/generations"):  # type: ignore[no-untyped-def]
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post(path, json=body, headers={"Authorization": f"Bearer {key}"})

    return asyncio.run(send())


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        ({"prompt": "a fox", "size": "3000x1000"}, 400, "size", "invalid_size"),
        ({"prompt": "a fox", "n": 9}, 400, "n", "invalid_n"),
        ({"prompt": "a fox", "model": "dall-e-3"}, 400, "model", "invalid_model"),
        ({"prompt": "   "}, 400, "prompt", "invalid_prompt"),
        ({"size": "1024x1024"}, 400, "prompt", "missing_required_parameter"),
        ({"prompt": "a fox", "output_format": "tiff"}, 400, "output_format", None),
        ({"prompt": "a fox", "output_compression": 101}, 400, "output_compression", None),
        ([1, 2], 400, None, "invalid_json"),
    ],
)
def test_bad_input_is_openais_error_shape_naming_the_field(
    app_and_key: tuple[object, str], body: object, status: int, param: str | None, code: str
) -> None:
    app, key = app_and_key
    answer = post(app, key, body)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and error["type"] == "invalid_request_error"
    if code:
        assert error["code"] == code


def test_a_bad_key_is_a_401_in_openais_shape(app_and_key: tuple[object, str]) -> None:
    app, _ = app_and_key
    answer = post(app, "ks_not_a_key", {"prompt": "a fox"})
    assert answer.status_code == 401
    assert answer.json()["error"] == {
        "message": "The API key is not valid or has been revoked.",
        "type": "authentication_error",
        "param": None,
        "code": "invalid_api_key",
    }


def test_no_worker_times_out_naming_the_tasks(app_and_key: tuple[object, str]) -> None:
    app, key = app_and_key
    answer = post(app, key, {"prompt": "a fox", "n": 2})
    assert answer.status_code == 504, answer.text
    assert answer.headers["x-should-retry"] == "false"
    error = answer.json()["error"]
    assert error["code"] == "generation_timeout" and error["message"].count("task-unified-") == 2


def test_the_contract_error_shape_is_unchanged_outside_the_prefix(
    app_and_key: tuple[object, str],
) -> None:
    app, key = app_and_key
    answer = post(
        app, key, {"model": "krea-2-turbo", "prompt": "x", "size": "7:5"}, "/v1/images/generations"
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "size"
    answer = post(app, key, {"model": "krea-2-turbo"}, "/v1/images/generations")
    assert "param" in answer.json()["error"]
    bare = post(app, "ks_not_a_key", {}, "/v1/images/generations").json()["error"]
    assert "param" not in bare


def test_a_refusal_part_way_cancels_the_tasks_already_made(
    app_and_key: tuple[object, str],
) -> None:
    app, _ = app_and_key
    db = app.state.services.db  # type: ignore[attr-defined]
    account_id, key = new_account(db, credits=0.9)  # two 1K images, not three
    answer = post(app, key, {"prompt": "a fox", "n": 3})
    assert answer.status_code == 402, answer.text
    assert answer.json()["error"]["code"] == "insufficient_credits"
    with db.read() as session:
        statuses = [t.status for t in session.query(Task).filter(Task.account_id == account_id)]
        reserved = session.get(Account, account_id).reserved_units
    assert statuses == [contract.CANCELLED] * 2 and reserved == 0


@pytest.mark.parametrize(
    ("code", "status"), [("content_policy_violation", 400), ("service_error", 500)]
)
def test_a_task_that_did_not_complete_is_an_error_naming_the_tasks(
    app_and_key: tuple[object, str], code: str, status: int
) -> None:
    app, _ = app_and_key
    done = Task(id="task-unified-1-aaaaaaaa", status=contract.COMPLETED, result_keys=["k"])
    failed = Task(
        id="task-unified-1-bbbbbbbb", status=contract.FAILED, error_code=code, error_message="m"
    )
    with pytest.raises(APIError) as caught:
        images_of(app.state.services, [done, failed], "url")  # type: ignore[attr-defined]
    assert caught.value.status == status and caught.value.code == code
    assert caught.value.headers == {"x-should-retry": "false"}
    assert done.id in caught.value.message and failed.id in caught.value.message


def test_the_tasks_are_read_as_the_account_sees_them(app_and_key: tuple[object, str]) -> None:
    """The wait reads all n tasks in one read through task_queue, as GET /v1/tasks/{id}
    does: another account's task among the ids is not found."""
    app, _ = app_and_key
    db = app.state.services.db  # type: ignore[attr-defined]
    params = task_queue.NewTask(
        prompt="a fox", size="1:1", quality="1K", seed=1, nsfw_check=False, callback_url=None
    )
    mine, _ = new_account(db, credits=10, name="mine")
    theirs, _ = new_account(db, credits=10, name="theirs")
    first, second = (task_queue.create(db, mine, None, "default", params, 1).id for _ in "ab")
    other = task_queue.create(db, theirs, None, "default", params, 1).id
    found = task_queue.get_many(db, mine, [second, other, first])
    assert set(found) == {first, second}
    assert found[first].status == contract.PENDING and found[first].account_id == mine
    assert task_queue.get_many(db, theirs, [first]) == {}
