"""The property-based "no 500" sweep of tests/unit/test_no_server_errors.py on PostgreSQL,
which refuses values SQLite stores (NUL in text, integers past 64 bits): fewer examples per
operation, so it stays within tens of seconds."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_postgres_database
from tests.unit.test_no_server_errors import Target, sweep

EXAMPLES = int(os.environ.get("KREASERVE_FUZZ_EXAMPLES_POSTGRES", "20"))


@pytest.fixture
def postgres_target(postgres_server: str, tmp_path: Path, weights_cache: Path) -> Iterator[Target]:
    url, drop = make_postgres_database(postgres_server)
    target = Target(url, tmp_path / "data", weights_cache)
    yield target
    target.db.dispose()
    drop()


@pytest.mark.postgres
def test_no_operation_answers_500_on_postgres(postgres_target: Target) -> None:
    seen = sweep(postgres_target, EXAMPLES)
    print(
        f"{sum(seen.values())} requests over {len(postgres_target.operations)} operations: "
        f"{dict(sorted(seen.items()))}"
    )
    assert not [status for status in seen if status[0] == "5" and status[:3] not in ("503", "504")]
