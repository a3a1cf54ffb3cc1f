"""The callback dispatcher asks for due deliveries ten times a second from every API
process; with nothing due, that costs one read and no write transaction (on SQLite a
`BEGIN IMMEDIATE` ten times a second made creates queue behind an empty claim)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event

from kreaserve.callbacks import outbox
from kreaserve.db import Database, upgrade


def test_an_idle_claim_takes_no_write_lock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    upgrade(url)
    db = Database(url)
    sent: list[str] = []

    @event.listens_for(db.engine, "after_cursor_execute")
    def _seen(_conn, _cursor, statement, *_rest) -> None:  # type: ignore[no-untyped-def]
        sent.append(statement.strip().upper())

    try:
        assert outbox.claim_due(db, "sender", 8, 60.0, per_account=2) == []
        assert "BEGIN IMMEDIATE" not in sent, sent
        assert len([sql for sql in sent if sql.startswith("SELECT")]) == 1, sent
    finally:
        db.dispose()
