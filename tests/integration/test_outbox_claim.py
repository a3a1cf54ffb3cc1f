"""The callback outbox's claim on real SQLite and PostgreSQL: two senders claiming at once
never hold the same delivery, a claim never takes more than asked, and the claim is fair
across accounts (a per-account cap, the oldest delivery of each account first).

The last two tests run on a PostgreSQL whose planner is steered to the plan in which
`UPDATE ... WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)` locks more than n
rows (issue 16): on the default plan that form happens to behave, so only this plan shows
whether the claim depends on it."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from itertools import pairwise

import pytest
from sqlalchemy import func, select, text, update

from kreaserve import ledger, task_queue
from kreaserve.callbacks import outbox
from kreaserve.db import Database, upgrade
from kreaserve.db.models import CallbackDelivery
from kreaserve.states import DeliveryState
from tests.conftest import make_postgres_database, new_account

PRICE = ledger.to_units(0.45)


def ended_tasks(db: Database, account_id: int, count: int) -> list[str]:
    """`count` tasks of the account, cancelled while pending, so each has a due delivery."""
    params = task_queue.NewTask(
        prompt="a fox",
        size="1:1",
        quality="1K",
        seed=5,
        nsfw_check=False,
        callback_url="https://example.com/hook",
    )
    ids = []
    for _ in range(count):
        task = task_queue.create(db, account_id, None, "default", params, PRICE)
        assert task_queue.cancel(db, account_id, task.id) is not None
        ids.append(task.id)
    return ids


def test_two_senders_claiming_at_once_never_hold_the_same_delivery(db: Database) -> None:
    accounts = [new_account(db, credits=1000, name=f"a{n}")[0] for n in range(6)]
    for account_id in accounts:
        ended_tasks(db, account_id, 25)
    limit = 7
    claims: dict[str, list[list[outbox.Due]]] = {"s1": [], "s2": []}
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def sender(name: str) -> None:
        try:
            for _ in range(200):
                barrier.wait(timeout=30)  # both claim at the same moment, every round
                claims[name].append(
                    outbox.claim_due(db, name, limit, lock_seconds=600, per_account=None)
                )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=sender, args=(name,)) for name in claims]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    sizes = [len(claim) for batches in claims.values() for claim in batches]
    assert max(sizes) <= limit, sizes
    held = Counter(due.id for batches in claims.values() for claim in batches for due in claim)
    twice = {delivery: n for delivery, n in held.items() if n > 1}
    print(
        f"{sum(sizes)} claims of {len(held)} deliveries in {len(sizes)} concurrent claim "
        f"calls; claimed twice: {len(twice)}"
    )
    assert not twice
    assert len(held) == 6 * 25


def test_the_claim_takes_each_accounts_oldest_first_and_caps_each_account(db: Database) -> None:
    hog = new_account(db, credits=1000, name="hog")[0]
    other = new_account(db, credits=1000, name="other")[0]
    ended_tasks(db, hog, 30)
    [late] = ended_tasks(db, other, 1)
    first = outbox.claim_due(db, "s1", 5, lock_seconds=600, per_account=2)
    assert Counter(due.account_id for due in first) == {hog: 2, other: 1}
    assert late in {due.task_id for due in first}
    # The hog's two held deliveries count against its cap, in any later claim.
    assert outbox.claim_due(db, "s2", 5, lock_seconds=600, per_account=2) == []
    assert len(outbox.claim_due(db, "s2", 5, lock_seconds=600, per_account=3)) == 1


#: Off, these leave the planner one cheap way to run `id IN (subquery)`: a nested-loop
#: semi-join that rescans the subquery for every row of the table. Each rescan locks
#: afresh, skips the rows this very UPDATE has changed, and so its LIMIT window moves on.
#: (jit too: the penalties of what is off push every plan past JIT's threshold, and
#: compiling costs 0.2 s a statement.)
RESCANNING_PLAN = ("enable_hashjoin", "enable_mergejoin", "enable_hashagg", "enable_sort")
RESCANNING_PLAN += ("enable_material", "jit")


@pytest.fixture
def rescanning_db(postgres_server: str) -> Iterator[Database]:
    """A migrated PostgreSQL database whose every session plans as `RESCANNING_PLAN` says."""
    url, drop = make_postgres_database(postgres_server)
    upgrade(url)
    database = Database(url)
    name = url.rsplit("/", 1)[1]
    with database.engine.begin() as connection:
        for setting in RESCANNING_PLAN:
            connection.execute(text(f'ALTER DATABASE "{name}" SET {setting} = off'))
    database.engine.dispose()  # the settings apply to sessions opened from now on
    yield database
    database.dispose()
    drop()


def in_subquery_claim_size(db: Database, limit: int) -> tuple[int, str]:
    """How many rows the `IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)` form locks in
    this database (rolled back), and its plan: the check that the steering works."""
    row = CallbackDelivery
    due = (
        select(row.id)
        .where(row.status == DeliveryState.PENDING)
        .order_by(row.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    statement = update(row).where(row.id.in_(due.scalar_subquery())).values(locked_by="probe")
    with db.engine.connect() as connection:
        compiled = statement.compile(connection)
        plan = connection.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params).scalars()
        changed = connection.execute(statement).rowcount
        connection.rollback()
    return changed, "\n".join(plan)


def locked_by(db: Database, sender: str) -> int:
    """How many deliveries the database shows locked by `sender` right now."""
    row = CallbackDelivery
    with db.read() as session:
        return session.execute(
            select(func.count()).where(row.locked_by == sender, row.locked_until > time.time())
        ).scalar_one()


def test_a_claim_locks_no_more_than_it_asks_in_a_rescanning_plan(rescanning_db: Database) -> None:
    db = rescanning_db
    for n in range(3):
        ended_tasks(db, new_account(db, credits=1000, name=f"a{n}")[0], 10)
    changed, plan = in_subquery_claim_size(db, 5)
    assert changed > 5, f"the steering no longer makes the unsafe form over-claim:\n{plan}"
    claimed = outbox.claim_due(db, "s1", 5, lock_seconds=600)
    held = locked_by(db, "s1")
    assert held <= 5 and held == len(claimed), f"asked 5, got {len(claimed)}, {held} locked"


def test_two_senders_never_hold_a_delivery_at_once_in_a_rescanning_plan(
    rescanning_db: Database,
) -> None:
    """Each sender runs `slots` attempts at a time, as the dispatcher's pool does, and
    asks for as many as it has free. A delivery is held from the claim's answer to its
    recorded attempt; a lock outlives an honest hold several times over, so only a claim of
    more than was asked (which waits its turn past its lock) can be held twice at once."""
    db = rescanning_db
    for n in range(3):
        ended_tasks(db, new_account(db, credits=1000, name=f"a{n}")[0], 10)
    # An honest hold is one round (0.1 s and two records); a claim of all 30 is held for
    # 15 rounds, at least 1.5 s: twice the lock.
    slots, attempt_seconds, lock_seconds = 2, 0.1, 0.75
    holds: dict[int, list[tuple[float, float, str]]] = defaultdict(list)
    errors: list[BaseException] = []

    def pending() -> int:
        with db.read() as session:
            return session.execute(
                select(func.count()).where(CallbackDelivery.status == DeliveryState.PENDING)
            ).scalar_one()

    def sender(name: str) -> None:
        try:
            deadline = time.monotonic() + 30
            while pending() and time.monotonic() < deadline:
                due = outbox.claim_due(db, name, slots, lock_seconds)
                claimed_at = time.monotonic()
                for start in range(0, len(due), slots):
                    time.sleep(attempt_seconds)  # the POSTs of one round of the pool
                    for delivery in due[start : start + slots]:
                        outbox.record_attempt(
                            db,
                            delivery,
                            name,
                            body=b"{}",
                            started_at=time.time(),
                            duration=attempt_seconds,
                            status_code=200,
                            error=None,
                        )
                        holds[delivery.id].append((claimed_at, time.monotonic(), name))
                if not due:
                    time.sleep(0.02)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=sender, args=(name,)) for name in ("s1", "s2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    overlapping = {
        delivery: spans
        for delivery, spans in holds.items()
        if any(later[0] < earlier[1] for earlier, later in pairwise(sorted(spans)))
    }
    attempts = Counter(len(spans) for spans in holds.values())
    print(f"{len(holds)} deliveries; attempts per delivery: {dict(attempts)}")
    example = next(iter(overlapping.items()), None)
    assert not overlapping, f"{len(overlapping)} held twice at once, e.g. {example}"
    assert attempts == {1: 30}, attempts
    assert pending() == 0
