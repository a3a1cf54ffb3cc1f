"""Idempotency-Key on creates: the same key and body within a day name one task, charged once.

The key row is the first statement of the create's own transaction: an
`INSERT ... ON CONFLICT (account_id, key) DO UPDATE ... WHERE <the old row has expired>`.
A row returned means this request owns the key and goes on to reserve and enqueue; none
means a live row exists. On PostgreSQL a racing insert of the same key waits until the
first transaction ends, so the loser then reads the winner's committed task; on SQLite
`BEGIN IMMEDIATE` serializes the two. The key is written before anything else, so the
transaction that waits holds no lock the winner needs. A create that fails (402, 429)
rolls its key back with it: only keys of created tasks are remembered.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from kreaserve.db.models import IdempotencyKey, Task
from kreaserve.db.rows import changed_rows

#: How long a key names its task; an older key creates a new task (and is purged).
TTL_SECONDS = 24 * 3600
#: The longest key accepted (Stripe's bound).
MAX_LENGTH = 255
HEADER = "Idempotency-Key"
#: What the OpenAPI document says of the header (checked by `check_header`, not FastAPI,
#: so a bad one gets the contract's error naming the header).
HEADER_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_LENGTH,
    "description": "Makes the create safe to retry: the same key and body within 24 hours "
    "answer the same task, charged once; the same key with another body is a 409.",
}


class KeyReused(Exception):
    """The key already names a task created from a different body."""


class Replayed(Exception):
    """The key already names this task (created from the same body): answer it again."""

    def __init__(self, task: Task) -> None:
        super().__init__(task.id)
        self.task = task


def body_hash(fields: dict[str, Any]) -> str:
    """A digest of a validated request, independent of key order and spacing."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def check_header(value: str | None) -> str | None:
    """The key of the header, or None without one; ValueError says what is wrong."""
    if value is None:
        return None
    if not value.strip():
        raise ValueError(f"{HEADER} must not be empty.")
    if len(value) > MAX_LENGTH:
        raise ValueError(f"{HEADER} must be at most {MAX_LENGTH} characters (got {len(value)}).")
    return value


@dataclass(frozen=True)
class Key:
    """An account's key for one create, and the digest of that create's body."""

    value: str
    request_hash: str

    def claim(self, session: Session, account_id: int, task_id: str, now: float) -> None:
        """Record that this key names `task_id`, in the create's transaction (one statement).

        Raises Replayed with the task the key already names (same body), or KeyReused."""
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        row = {
            "account_id": account_id,
            "key": self.value,
            "request_hash": self.request_hash,
            "task_id": task_id,
            "created_at": now,
        }
        upsert = dialect.insert(IdempotencyKey).values(**row)
        claimed = session.execute(
            upsert.on_conflict_do_update(
                index_elements=["account_id", "key"],
                set_={name: upsert.excluded[name] for name in row if name != "account_id"},
                where=IdempotencyKey.created_at < now - TTL_SECONDS,
            ).returning(IdempotencyKey.task_id)
        ).scalar_one_or_none()
        if claimed is not None:
            return
        earlier = session.execute(
            select(IdempotencyKey.request_hash, Task)
            .join(Task, Task.id == IdempotencyKey.task_id)
            .where(IdempotencyKey.account_id == account_id, IdempotencyKey.key == self.value)
        ).one()
        if earlier.request_hash != self.request_hash:
            raise KeyReused
        session.expunge(earlier.Task)  # keeps its loaded state through the rollback
        raise Replayed(earlier.Task)


def purge_expired(session: Session, now: float | None = None) -> int:
    """Delete keys older than TTL_SECONDS (maintenance); how many."""
    now = time.time() if now is None else now
    return changed_rows(
        session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < now - TTL_SECONDS))
    )
