"""The queue snapshot behind `estimated_time` at depth: what it reads is bounded (the
oldest HEAD tasks of a tier one by one, a histogram of the rest counted by the
database), and places stay exact within the head and close beyond it."""

from __future__ import annotations

import time

from sqlalchemy import event, insert

from kreaserve import contract
from kreaserve.db import Database
from kreaserve.db.models import Task
from kreaserve.estimates import BUCKETS, HEAD, read_snapshot
from tests.conftest import new_account

DEPTH = 3000


def add_pending(db: Database, account_id: int, quality: str, times: list[float]) -> list[str]:
    rows = [
        {
            "id": f"task-unified-{int(at)}-{quality}{index:06d}",
            "account_id": account_id,
            "model": contract.MODEL,
            "prompt": "queued",
            "size": "1:1",
            "quality": quality,
            "width": 1024,
            "height": 1024,
            "seed": index,
            "nsfw_check": False,
            "status": contract.PENDING,
            "progress": 0,
            "cancel_requested": False,
            "created": int(at),
            "created_at": at,
            "attempts": 0,
            "price_units": 4500,
            "user_group": "default",
            "billing_state": "reserved",
            "results_purged": False,
        }
        for index, at in enumerate(times)
    ]
    with db.transaction() as session:
        session.execute(insert(Task), rows)
    return [row["id"] for row in rows]


def test_the_snapshot_reads_a_bounded_queue_at_depth(db: Database) -> None:
    account_id, _ = new_account(db)
    now = time.time() - 3600
    # Uneven arrivals: a burst, a lull, another burst (1K); a few 2K tasks between.
    times = [now + i * 0.001 for i in range(DEPTH // 2)] + [
        now + 600 + i * 0.5 for i in range(DEPTH // 2)
    ]
    add_pending(db, account_id, "1K", times)
    add_pending(db, account_id, "2K", [now + 300 + i for i in range(10)])
    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        statements.append(" ".join(statement.split()))

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        snapshot = read_snapshot(db)
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)

    # Two rates, the heads of both tiers, the 1K histogram, processing, workers.
    reads = [s for s in statements if not s.upper().startswith(("BEGIN", "COMMIT"))]
    assert len(reads) == 6, reads
    # None returns a row per pending task: each is limited or aggregated.
    for statement in reads:
        upper = statement.upper()
        assert "LIMIT" in upper or "COUNT(" in upper or "AVG(" in upper, statement
    deep = snapshot.pending["1K"]
    assert len(deep.head) == HEAD and len(deep.counts) == BUCKETS
    assert sum(deep.counts) == DEPTH - HEAD
    assert snapshot.pending["2K"].counts == [] and len(snapshot.pending["2K"].head) == 10

    # Places: exact in the head; beyond it, within one bucket's share of the tail.
    tolerance = (DEPTH - HEAD) / BUCKETS * 2
    for index in (0, 1, HEAD - 1, HEAD, HEAD + 1, DEPTH // 2, DEPTH // 2 + 7, DEPTH - 1):
        before_1k = deep.before(times[index])
        if index < HEAD:
            assert before_1k == index
        else:
            assert abs(before_1k - index) <= tolerance, (index, before_1k)
    assert deep.before(times[-1]) == DEPTH - 1  # the newest never counts itself
    assert deep.before(times[-1] + 1) == DEPTH
    # A 2K task created in the lull has the whole first burst ahead of it.
    assert deep.before(now + 300) == DEPTH // 2
