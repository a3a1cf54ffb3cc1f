"""The callback outbox's claim on real SQLite and PostgreSQL: two senders claiming at once
never hold the same delivery, a claim never takes more than asked, and the claim is fair
across accounts (a per-account cap, the oldest delivery of each account first)."""

from __future__ import annotations

import threading
from collections import Counter

from kreaserve import ledger, task_queue
from kreaserve.callbacks import outbox
from kreaserve.db import Database
from tests.conftest import new_account

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
