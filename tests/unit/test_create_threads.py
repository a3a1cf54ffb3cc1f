"""Creates run in `KREASERVE_CREATE_CONCURRENCY` threads, not one per waiting request:
twelve creates sent at once (the contract's, or the OpenAI-compatible endpoint's),
in-process on a real SQLite file, never have more than that many moderations running
together, and every one of them is created. The wrk figures
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
    """Allows every prompt, counting how many checks overlap. A check waits (up to 5 s)
    until `expected` checks run together or every create has begun, so the count does
    not depend on how quickly the requests reach the threads on a loaded machine; a path
    that allows more than `expected` at once still shows more."""

    def __init__(self, expected: int, total: int) -> None:
        self.expected, self.total = expected, total
        self.changed = threading.Condition()
        self.active = 0
        self.begun = 0
        self.most = 0

    def warm(self) -> None:
        pass

    def check(self, prompt: str, *, strict: bool) -> Decision:
        with self.changed:
            self.active += 1
            self.begun += 1
            self.most = max(self.most, self.active)
            self.changed.notify_all()
            self.changed.wait_for(
                lambda: self.active >= self.expected or self.begun >= self.total, timeout=5
            )
        time.sleep(0.02)
        with self.changed:
            self.active -= 1
        return Decision(allowed=True, category=None, score=0.0, mode="basic", source="prompt")


def overlap_of_twelve_creates(
    tmp: Path, concurrency: int, url_path: str = URL
) -> tuple[int, list[int], int]:
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
        openai_wait_seconds=0.2,  # no worker runs: the OpenAI endpoint answers 504 then
    )
    db = Database(url)
    app = create_app(settings, db=db, storage=LocalStorage(settings.images_dir))
    moderator = SlowCountingModerator(expected=concurrency, total=12)
    app.state.services.moderator = moderator
    _, key = new_account(db, credits=100)

    async def send_all() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            answers = await asyncio.gather(
                *(
                    client.post(
                        url_path,
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
    # anyio's threadpool (the old path) ran all twelve at once.
    assert most == concurrency


def test_the_openai_endpoint_creates_in_the_same_threads(tmp_path: Path) -> None:
    most, statuses, tasks = overlap_of_twelve_creates(tmp_path, 2, "/openai/v1/images/generations")
    assert statuses == [504] * 12  # created, then not finished within the wait: no worker
    assert tasks == 12
    assert most == 2


def test_a_create_concurrency_of_zero_is_refused_with_its_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KREASERVE_CREATE_CONCURRENCY", "0")
    with pytest.raises(ValidationError, match="create_concurrency"):
        Settings(_env_file=None)
