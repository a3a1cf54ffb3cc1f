"""Every size x quality of the contract is stored with the table's pixels, and each is a
size the engine accepts as it is (a multiple of 16: the pipeline would silently round any
other). tests/integration/test_sizes.py then renders every aspect ratio for real."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kreaserve import admin_service, contract, ledger, task_queue
from kreaserve.db import Database, upgrade
from kreaserve.db.models import Task


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path_factory.mktemp('sizes') / 'sizes.db'}"
    upgrade(url)
    database = Database(url)
    yield database
    database.dispose()


def test_the_table_covers_every_size_and_quality_in_multiples_of_16() -> None:
    assert set(contract.PIXELS) == {(s, q) for s in contract.SIZES for q in contract.QUALITIES}
    for combo, (width, height) in contract.PIXELS.items():
        assert width % 16 == 0 and height % 16 == 0, combo


def test_every_size_and_quality_is_queued_with_the_tables_pixels(db: Database) -> None:
    account = admin_service.create_account(db, "sizes", ledger.to_units(100), {})["id"]
    queued = {}
    for size, quality in contract.PIXELS:
        params = task_queue.NewTask(
            prompt="a fox", size=size, quality=quality, seed=1, nsfw_check=False, callback_url=None
        )
        task = task_queue.create(db, account, None, "default", params, ledger.to_units(0.1))
        with db.transaction() as session:
            stored = session.get(Task, task.id)
            assert stored is not None
            queued[(size, quality)] = (stored.width, stored.height)
    assert queued == contract.PIXELS
