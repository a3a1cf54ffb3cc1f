"""The queue and the ledger against real SQLite and PostgreSQL, under concurrency."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select, update

from kreaserve import contract, ledger, task_queue
from kreaserve.db import Database
from kreaserve.db.models import Account, LedgerEntry, Task
from tests.conftest import new_account

PARAMS = task_queue.NewTask(
    prompt="a fox", size="1:1", quality="1K", seed=5, nsfw_check=False, callback_url=None
)
PRICE = ledger.to_units(0.45)


def create(db: Database, account_id: int) -> Task:
    return task_queue.create(db, account_id, None, "default", PARAMS, PRICE)


def check_balanced(db: Database, account_id: int) -> ledger.Balance:
    with db.transaction() as session:
        stored = ledger.balance(session, account_id)
        assert ledger.balance_from_entries(session, account_id) == stored
        assert 0 <= stored.reserved_units <= stored.balance_units
        in_flight = session.execute(
            select(func.count())
            .select_from(Task)
            .where(
                Task.account_id == account_id,
                Task.status.in_((contract.PENDING, contract.PROCESSING)),
            )
        ).scalar_one()
        assert session.get(Account, account_id).tasks_in_flight == in_flight
    return stored


def test_concurrent_creates_never_overspend(db: Database) -> None:
    """Credits for exactly 5 tasks, 20 creates at once: exactly 5 accepted."""
    account_id, _ = new_account(db, credits=0.45 * 5)
    barrier = threading.Barrier(20)

    def attempt(_: int) -> bool:
        barrier.wait()
        try:
            create(db, account_id)
            return True
        except task_queue.InsufficientCredits:
            return False

    with ThreadPoolExecutor(20) as pool:
        accepted = sum(pool.map(attempt, range(20)))
    assert accepted == 5
    standing = check_balanced(db, account_id)
    assert standing.available_units == 0 and standing.reserved_units == 5 * PRICE


def test_concurrent_claims_never_hand_out_a_task_twice(db: Database) -> None:
    account_id, _ = new_account(db, credits=100)
    created = {create(db, account_id).id for _ in range(30)}
    claimed: list[str] = []
    lock = threading.Lock()

    def work(worker: int) -> None:
        while (claim := task_queue.claim(db, f"w{worker}", 30)) is not None:
            with lock:
                claimed.append(claim.task_id)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(created)


def test_claims_are_first_in_first_out(db: Database) -> None:
    account_id, _ = new_account(db)
    ids = [create(db, account_id).id for _ in range(5)]
    assert [task_queue.claim(db, "w", 30).task_id for _ in range(5)] == ids
    assert task_queue.claim(db, "w", 30) is None


def test_complete_charges_once_and_a_stale_worker_cannot_finish(db: Database) -> None:
    account_id, _ = new_account(db, credits=1)
    task = create(db, account_id)
    claim = task_queue.claim(db, "w1", 30)
    assert claim and claim.task_id == task.id
    assert not task_queue.complete(db, task.id, "someone-else", ["k"], 60, 1.0)
    assert task_queue.complete(db, task.id, "w1", ["k"], 60, 1.0)
    assert not task_queue.complete(db, task.id, "w1", ["k"], 60, 1.0)  # a retry changes nothing
    assert not task_queue.fail(db, task.id, "w1", "service_error", "late failure")
    standing = check_balanced(db, account_id)
    assert standing.balance_units == ledger.to_units(1) - PRICE
    assert standing.reserved_units == 0


def test_fail_releases_the_reservation(db: Database) -> None:
    account_id, _ = new_account(db, credits=1)
    task = create(db, account_id)
    task_queue.claim(db, "w1", 30)
    assert task_queue.fail(db, task.id, "w1", "generation_timeout", "too slow")
    with db.transaction() as session:
        row = session.get(Task, task.id)
        assert (row.status, row.error_code, row.billing_state) == (
            "failed",
            "generation_timeout",
            "released",
        )
    assert check_balanced(db, account_id).balance_units == ledger.to_units(1)


def expire_lease(db: Database, task_id: str) -> None:
    with db.transaction() as session:
        session.execute(
            update(Task).where(Task.id == task_id).values(lease_expires_at=time.time() - 1)
        )


def test_expired_lease_returns_the_task_then_fails_it_after_max_attempts(db: Database) -> None:
    account_id, _ = new_account(db, credits=1)
    task = create(db, account_id)
    for attempt in (1, 2):
        claim = task_queue.claim(db, f"w{attempt}", 30)
        assert claim.attempts == attempt
        assert task_queue.reap(db, max_attempts=2) == 0  # lease still valid
        expire_lease(db, task.id)
        assert task_queue.reap(db, max_attempts=2) == 1
    with db.transaction() as session:
        row = session.get(Task, task.id)
        assert (row.status, row.error_code) == ("failed", "service_error")
    assert check_balanced(db, account_id).reserved_units == 0


def test_renew_reports_cancel_and_a_lost_lease(db: Database) -> None:
    account_id, _ = new_account(db)
    task = create(db, account_id)
    task_queue.claim(db, "w1", 30)
    assert task_queue.renew(db, task.id, "w1", 30, progress=40) == task_queue.LeaseState(
        True, False
    )
    after = task_queue.cancel(db, account_id, task.id)
    assert after.status == "processing" and after.cancel_requested
    assert task_queue.renew(db, task.id, "w1", 30) == task_queue.LeaseState(True, True)
    assert task_queue.renew(db, task.id, "w2", 30) == task_queue.LeaseState(False, False)
    with db.transaction() as session:
        assert session.get(Task, task.id).progress == 40


def test_cancel_requested_task_whose_worker_died_ends_cancelled(db: Database) -> None:
    account_id, _ = new_account(db)
    task = create(db, account_id)
    task_queue.claim(db, "w1", 30)
    task_queue.cancel(db, account_id, task.id)
    expire_lease(db, task.id)
    task_queue.reap(db, max_attempts=3)
    with db.transaction() as session:
        assert session.get(Task, task.id).status == contract.CANCELLED
    assert check_balanced(db, account_id).reserved_units == 0


def test_ledger_entries_are_append_only_records_of_every_move(db: Database) -> None:
    account_id, _ = new_account(db, credits=2)
    done, failed = create(db, account_id), create(db, account_id)
    task_queue.claim(db, "w", 30)
    task_queue.claim(db, "w", 30)
    task_queue.complete(db, done.id, "w", ["k"], 60, 1.0)
    task_queue.fail(db, failed.id, "w", "service_error", "x")
    with db.transaction() as session:
        kinds = [
            (e.kind, e.task_id, e.amount_units)
            for e in session.execute(
                select(LedgerEntry)
                .where(LedgerEntry.account_id == account_id)
                .order_by(LedgerEntry.id)
            ).scalars()
        ]
    assert kinds == [
        ("grant", None, 20000),
        ("reserve", done.id, PRICE),
        ("reserve", failed.id, PRICE),
        ("charge", done.id, PRICE),
        ("release", failed.id, PRICE),
    ]


def test_negative_grant_cannot_take_reserved_credits(db: Database) -> None:
    account_id, _ = new_account(db, credits=1)
    create(db, account_id)
    with db.transaction() as session, pytest.raises(ValueError):
        ledger.grant(session, account_id, -ledger.to_units(0.6))
    check_balanced(db, account_id)


def test_rate_windows_lease_per_minute_and_old_ones_are_forgotten(db: Database) -> None:
    from kreaserve import limits
    from kreaserve.db.models import RateWindow

    account_id, _ = new_account(db)
    start = 1_800_000_000.0  # the start of a minute
    with db.transaction() as session:
        lease = [limits.lease(session, account_id, limits.REQUESTS, 2, start + i) for i in range(3)]
        assert lease == [1, 1, 0]  # slices of 1 (at least 1), never past the limit
        assert limits.lease(session, account_id, limits.REQUESTS, 2, start + 61) == 1
        assert limits.lease(session, account_id, limits.KEY_CREATES, 2, start + 61) == 1
        # A larger limit leases a fiftieth at a time; the last slice is cut to what is left.
        assert limits.lease(session, account_id, "other", 120, start) == 2
        slices = [limits.lease(session, account_id, "other", 121, start) for _ in range(61)]
        assert slices[-2:] == [1, 0] and sum(slices) == 119
        assert limits.forget_old_windows(session, start + 125) == 2
        assert sorted(session.execute(select(RateWindow.bucket)).scalars()) == [
            limits.KEY_CREATES,
            limits.REQUESTS,
        ]


def test_quota_leases_of_several_processes_never_pass_the_limit(db: Database) -> None:
    """Three processes' leases, 40 requests each at once, limit 100: never over 100, and
    short of it by at most one slice (2) per process."""
    from kreaserve import limits

    account_id, _ = new_account(db)
    processes = [limits.QuotaLeases(db) for _ in range(3)]
    barrier = threading.Barrier(12)
    now = time.time()
    if 60 - now % 60 < 10:  # keep the run inside one minute
        time.sleep(60 - now % 60 + 0.1)

    def hammer(i: int) -> int:
        leases = processes[i % 3]
        barrier.wait()
        return sum(leases.take(account_id, limits.REQUESTS, 100) is None for _ in range(40))

    with ThreadPoolExecutor(12) as pool:
        admitted = sum(pool.map(hammer, range(12)))
    assert 100 - 3 * 2 <= admitted <= 100
    refusal = processes[0].take(account_id, limits.REQUESTS, 100)
    assert refusal is not None and "100 requests per minute" in refusal.message
    assert 1 <= refusal.retry_after <= 60


def _create_sized(db: Database, account_id: int, size: str, quality: str) -> Task:
    params = task_queue.NewTask(
        prompt="a fox", size=size, quality=quality, seed=5, nsfw_check=False, callback_url=None
    )
    return task_queue.create(db, account_id, None, "default", params, PRICE)


def test_a_batch_claim_takes_the_oldest_task_and_more_of_its_pixel_size_only(
    db: Database,
) -> None:
    account_id, _ = new_account(db, credits=100)
    square = [_create_sized(db, account_id, "1:1", "1K").id for _ in range(2)]
    wide = _create_sized(db, account_id, "16:9", "1K").id
    square += [_create_sized(db, account_id, "1:1", "1K").id for _ in range(3)]
    big = _create_sized(db, account_id, "1:1", "2K").id

    first = task_queue.claim_batch(db, "w1", 30, 4)
    assert [c.task_id for c in first] == square[:4]  # oldest first, the wide one skipped
    assert {(c.width, c.height) for c in first} == {(1024, 1024)}
    second = task_queue.claim_batch(db, "w1", 30, 4)
    assert [c.task_id for c in second] == [wide]  # no other 16:9 task waits
    third = task_queue.claim_batch(db, "w2", 30, 4)
    assert [c.task_id for c in third] == [square[4]]
    assert [c.task_id for c in task_queue.claim_batch(db, "w2", 30, 4)] == [big]
    assert task_queue.claim_batch(db, "w2", 30, 4) == []
    with db.transaction() as session:
        rows = session.execute(
            select(Task.status, Task.worker_id, Task.attempts).where(Task.id.in_(square[:4]))
        ).all()
    assert {tuple(r) for r in rows} == {(contract.PROCESSING, "w1", 1)}


def test_a_retried_task_runs_alone_and_is_never_added_to_a_batch(db: Database) -> None:
    account_id, _ = new_account(db, credits=100)
    retried = create(db, account_id).id
    [claim] = task_queue.claim_batch(db, "w1", 30, 1)
    assert claim.task_id == retried and task_queue.requeue(db, retried, "w1")
    fresh = [create(db, account_id).id for _ in range(3)]
    # The retried task is the oldest: it is claimed, and alone.
    assert [c.task_id for c in task_queue.claim_batch(db, "w1", 30, 4)] == [retried]
    # A fresh batch never picks up a retried task either.
    assert task_queue.requeue(db, retried, "w1")
    batch = task_queue.claim_same_size(db, "w2", 30, 1024, 1024, 10)
    assert [c.task_id for c in batch] == fresh


def test_concurrent_batch_claims_never_hand_out_a_task_twice(db: Database) -> None:
    account_id, _ = new_account(db, credits=100)
    created = {create(db, account_id).id for _ in range(24)}
    claimed: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def work(worker: int) -> None:
        barrier.wait()
        while batch := task_queue.claim_batch(db, f"w{worker}", 30, 4):
            with lock:
                claimed.extend(c.task_id for c in batch)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(4)))
    assert sorted(claimed) == sorted(created)
