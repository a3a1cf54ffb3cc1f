"""Creates run in `KREASERVE_CREATE_CONCURRENCY` threads, not one per waiting request:
twelve creates sent at once, in-process on a real SQLite file, never have more than that
many moderations running together, and every one of them is created. The wrk figures
that chose the default are in BENCHMARKS.md."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from kreaserve.api.app import create_app
from kreaserve.config import Settings
from kreaserve.db import Database, upgrade
from kreaserve.db.models import Task
from kreaserve.moderation import Decision
from kreaserve.storage import LocalStorage
from tests.conftest import new_account

URL = "/v1/images/generations"


class SlowCountingModerator:
    """Allows every prompt after 50 ms, counting how many checks overlap."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.most = 0

    def warm(self) -> None:
        pass

    def check(self, prompt: str, *, strict: bool) -> Decision:
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        time.sleep(0.05)
        with self.lock:
            self.active -= 1
        return Decision(allowed=True, category=None, score=0.0, mode="basic", source="prompt")


def overlap_of_twelve_creates(tmp: Path, concurrency: int) -> tuple[int, list[int], int]:
    """(most checks at once, the answers' statuses, tasks in the database)."""
    url = f"sqlite:///{tmp / 'threads.db'}"
    upgrade(url)
    settings = Settings(
        _env_file=None,
        data_dir=tmp,
        database_url=url,
        secret_key="threads",
        requests_per_minute=10**6,
        create_concurrency=concurrency,
    )
    db = Database(url)
    app = create_app(settings, db=db, storage=LocalStorage(settings.images_dir))
    moderator = SlowCountingModerator()
    app.state.services.moderator = moderator
    _, key = new_account(db, credits=100)

    async def send_all() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            answers = await asyncio.gather(
                *(
                    client.post(
                        URL,
                        json={"model": "krea-2-turbo", "prompt": f"a lighthouse, take {n}"},
                        headers={"Authorization": f"Bearer {key}"},
                    )
                    for n in range(12)
                )
            )
        return [answer.status_code for answer in answers]

    try:
        statuses = asyncio.run(send_all())
        with db.read() as session:
            tasks = session.execute(select(func.count()).select_from(Task)).one()[0]
    finally:
        app.state.services.create_threads.shutdown(wait=True)
        db.dispose()
    return moderator.most, statuses, tasks


@pytest.mark.parametrize("concurrency", [2, 5])
def test_creates_overlap_at_most_the_setting_and_all_are_created(
    tmp_path: Path, concurrency: int
) -> None:
    most, statuses, tasks = overlap_of_twelve_creates(tmp_path, concurrency)
    assert statuses == [200] * 12
    assert tasks == 12
    # Twelve 50 ms checks sent together fill every thread there is; anyio's threadpool
    # (the old path) ran all twelve at once.
    assert most == concurrency


def test_a_create_concurrency_of_zero_is_refused_with_its_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KREASERVE_CREATE_CONCURRENCY", "0")
    with pytest.raises(ValidationError, match="create_concurrency"):
        Settings(_env_file=None)
