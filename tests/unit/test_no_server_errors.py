"""Property-based: no operation of the API answers a 500, whatever odd values its path
parameters, query parameters and body carry (in-process app on SQLite; the same sweep on
PostgreSQL, for the values only PostgreSQL refuses, is in tests/integration)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from starlette.testclient import TestClient

from kreaserve import accounts, ledger
from kreaserve.api.app import create_app
from kreaserve.config import Settings
from kreaserve.db import Database, upgrade
from tests import fuzzing

ADMIN = "fuzz-admin-token"
#: Examples per operation (KREASERVE_FUZZ_EXAMPLES raises it for a longer hunt).
EXAMPLES = int(os.environ.get("KREASERVE_FUZZ_EXAMPLES", "40"))


class Target:
    """The app in-process over a migrated database, with a victim account (ids 1) whose
    key and account the fuzzed requests may hit, and the fuzzing account's own key."""

    def __init__(self, database_url: str, data_dir: Path, cache_dir: Path) -> None:
        upgrade(database_url)
        self.db = Database(database_url)
        with self.db.transaction() as session:
            victim = accounts.create_account(session, "victim", ledger.to_units(10))
            accounts.create_key(session, victim, "victim")
            me = accounts.create_account(session, "fuzzer", ledger.to_units(10**6))
            self.key = accounts.create_key(session, me, "fuzzer").secret
        config = Settings(
            data_dir=data_dir,
            database_url=database_url,
            secret_key="fuzz",
            cache_dir=cache_dir,
            admin_token=ADMIN,
            requests_per_minute=10**9,
            max_tasks_in_flight=10**6,
            openai_wait_seconds=0.2,  # no worker: the OpenAI endpoint's wait ends in a 504
        )
        self.app = create_app(config, db=self.db)
        self.operations = fuzzing.operations(self.app.openapi())
        self.ids = ["1", "0", "3", "99999"]  # never the fuzzer's own key (2): it would revoke it


def run_operation(
    client: TestClient,
    operation: fuzzing.Operation,
    target: Target,
    examples: int,
    seen: Counter[str],
) -> None:
    """`examples` drawn requests to one operation, failing on the first server error."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(call=fuzzing.calls(operation, target.key, ADMIN, target.ids))
    def no_server_error(call: fuzzing.Call) -> None:
        response = fuzzing.send(client, operation, call)
        seen[str(response.status_code)] += 1
        if response.status_code >= 500:
            seen[f"{response.status_code} from {operation.name}"] += 1
        fuzzing.check(operation, call, response)

    no_server_error()


def sweep(target: Target, examples: int) -> Counter[str]:
    """Run `examples` drawn requests against every operation; returns the statuses seen."""
    seen: Counter[str] = Counter()
    with TestClient(target.app, raise_server_exceptions=False) as client:
        for operation in target.operations:
            run_operation(client, operation, target, examples, seen)
    return seen


@pytest.fixture
def sqlite_target(tmp_path: Path, weights_cache: Path) -> Iterator[Target]:
    target = Target(f"sqlite:///{tmp_path / 'fuzz.db'}", tmp_path / "data", weights_cache)
    yield target
    target.db.dispose()


def test_no_operation_answers_500_on_sqlite(sqlite_target: Target) -> None:
    seen = sweep(sqlite_target, EXAMPLES)
    print(
        f"{sum(seen.values())} requests over {len(sqlite_target.operations)} operations: "
        f"{dict(seen)}"
    )
    assert len(sqlite_target.operations) >= 25
    assert not [status for status in seen if status[0] == "5" and status[:3] not in ("503", "504")]
