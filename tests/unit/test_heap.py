"""The API's start-up freezes its heap (`gc.freeze`), so full collections under load skip
the few hundred thousand objects that live as long as the process: measured under wrk on
PostgreSQL, full collections took 54-87 ms each (38 in a poll and credits run) before and
1.2-1.5 ms after (BENCHMARKS.md, issue 12)."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kreaserve import heap
from kreaserve.api.app import create_app
from kreaserve.config import Settings
from kreaserve.db import Database, upgrade
from kreaserve.storage import LocalStorage
from tests.unit.test_request_cost import AllowAll


def timed_collect() -> float:
    began = time.perf_counter()
    gc.collect()
    return time.perf_counter() - began


@pytest.fixture
def unfrozen(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process as if no app had started in it yet (another test's may have)."""
    gc.unfreeze()
    monkeypatch.setattr(heap, "_frozen", False)
    yield
    gc.unfreeze()


def test_the_apps_start_up_freezes_the_heap_once(tmp_path: Path, unfrozen: None) -> None:
    url = f"sqlite:///{tmp_path / 'heap.db'}"
    upgrade(url)
    settings = Settings(_env_file=None, data_dir=tmp_path, database_url=url, secret_key="heap")
    db = Database(url)
    app = create_app(settings, db=db, storage=LocalStorage(settings.images_dir))
    app.state.services.moderator = AllowAll()
    assert gc.get_freeze_count() == 0
    try:
        with TestClient(app) as client:
            assert client.get("/healthz").status_code == 200
            frozen = gc.get_freeze_count()
            # The imports and the app alone are well over 100,000 objects.
            assert frozen > 100_000
            after_freeze = min(timed_collect() for _ in range(3))  # least of 3: preemption
            # A later start-up in the same process freezes nothing more.
            assert heap.freeze_startup_heap() is False
            assert gc.get_freeze_count() == frozen
    finally:
        db.dispose()
    gc.unfreeze()
    unfrozen_collect = timed_collect()
    # What the freeze is for: a full collection walks far fewer objects. (Timed once each
    # here, on purpose loosely: the wrk figures are in BENCHMARKS.md.)
    assert after_freeze < unfrozen_collect
