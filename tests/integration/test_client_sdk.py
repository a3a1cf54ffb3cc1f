"""The SDK over real HTTP against a real `kreaserve serve`, on SQLite and PostgreSQL:
`run()` end to end (sync and async) through a generating server, and the typed calls,
errors and task list against the API-only server."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from PIL import Image

from kreaserve.client import AsyncClient, Client, KreaserveError, Task
from tests.conftest import Server


def test_run_returns_and_saves_the_image(full_server: Server, tmp_path: Path) -> None:
    updates: list[Task] = []
    with Client(full_server.url, full_server.key(), poll_interval=0.1) as client:
        image = client.run(
            "a red fox in snow",
            size="1:1",
            seed=11,
            output=tmp_path / "fox.png",
            on_update=updates.append,
        )
        credits = client.credits()
    assert Image.open(io.BytesIO(image)).size == (1024, 1024)
    assert (tmp_path / "fox.png").read_bytes() == image
    assert not list(tmp_path.glob("*.part"))
    assert updates[0].status == "pending" and updates[-1].status == "completed"
    assert updates[-1].seed == 11 and updates[-1].progress == 100
    assert credits.balance == pytest.approx(100 - 0.45) and credits.reserved == 0


def test_async_run_gives_the_same_pixels_for_the_same_seed(full_server: Server) -> None:
    key = full_server.key()

    async def main() -> tuple[bytes, bytes]:
        async with AsyncClient(full_server.url, key, poll_interval=0.1) as client:
            return await asyncio.gather(
                client.run("a lighthouse at dusk", size="16:9", seed=5),
                client.run("a lighthouse at dusk", size="16:9", seed=5),
            )

    first, second = asyncio.run(main())
    images = [Image.open(io.BytesIO(data)) for data in (first, second)]
    assert images[0].size == (1344, 768)
    assert images[0].tobytes() == images[1].tobytes()


def test_typed_calls_errors_and_the_task_list(api_server: Server) -> None:
    with Client(api_server.url, api_server.key()) as client:
        created = [client.create("a quiet harbour", quality="2K") for _ in range(3)]
        assert all(t.status == "pending" and t.usage.credits_reserved == 1.8 for t in created)
        assert created[0].task_info.estimated_time is not None
        cancelled = client.cancel(created[0].id)
        page = client.list_tasks(limit=2)
        everything = list(client.iter_tasks(page_size=1))
        only_cancelled = client.list_tasks(status="cancelled")
        with pytest.raises(KreaserveError) as bad_size:
            client.create("a fox", size="7:5")
        with pytest.raises(KreaserveError) as unknown:
            client.get("task-unified-1-aaaaaaaa")
        with pytest.raises(KreaserveError) as bad_status:
            client.list_tasks(status="done")
    assert cancelled.status == "cancelled" and cancelled.error.code == "request_cancelled"
    assert [t.id for t in page.data] == [created[2].id, created[1].id] and page.has_more
    assert [t.id for t in everything] == [t.id for t in reversed(created)]
    assert [t.id for t in only_cancelled.data] == [created[0].id]
    assert (bad_size.value.status, bad_size.value.param) == (400, "size")
    assert bad_size.value.type == "invalid_request_error"
    assert unknown.value.status == 404
    assert (bad_status.value.code, bad_status.value.param) == ("invalid_status", "status")


def test_a_wrong_key_is_an_authentication_error(api_server: Server) -> None:
    async def main() -> None:
        async with AsyncClient(api_server.url, "ks_wrong") as client:
            await client.credits()

    with pytest.raises(KreaserveError) as caught:
        asyncio.run(main())
    assert caught.value.status == 401 and caught.value.type == "authentication_error"
