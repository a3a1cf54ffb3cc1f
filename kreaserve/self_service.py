"""What account holders do to their own account: their keys (listed, created within the
account's bounds, rotated, revoked) and the secret that signs their callbacks. One
transaction each; refusals are exceptions the API words in the contract's error shape."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from kreaserve import accounts, limits
from kreaserve.admin_service import KeyNotFound
from kreaserve.db import Database
from kreaserve.db.models import ApiKey

__all__ = [
    "CreationsLimited",
    "IssuedKey",
    "KeyNotFound",
    "TooManyKeys",
    "create_key",
    "list_keys",
    "revoke_key",
    "rotate_key",
    "rotate_webhook_secret",
    "webhook_secret",
]


class TooManyKeys(Exception):
    """The account holds its most live keys already."""

    def __init__(self, most: int) -> None:
        super().__init__(f"at most {most} live keys")
        self.most = most


class CreationsLimited(Exception):
    """The account made its most keys this minute (created or rotated)."""

    def __init__(self, refusal: limits.Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


@dataclass(frozen=True)
class IssuedKey:
    """A key just made: its secret (shown once) and its row."""

    new: accounts.NewKey
    key: ApiKey


def list_keys(db: Database, account_id: int) -> list[ApiKey]:
    with db.read() as session:
        return accounts.list_keys(session, account_id)


def create_key(
    db: Database, account_id: int, name: str, *, max_keys: int, creates_per_minute: int
) -> IssuedKey:
    """A new key, unless the account holds `max_keys` live keys or made
    `creates_per_minute` this minute (counted in this transaction, so a refused one is not)."""
    with db.transaction() as session:
        if accounts.live_key_count(session, account_id) >= max_keys:
            raise TooManyKeys(max_keys)
        _count_creation(session, account_id, creates_per_minute)
        new = accounts.create_key(session, account_id, name)
        return IssuedKey(new, session.get_one(ApiKey, new.key_id))


def rotate_key(db: Database, account_id: int, key_id: int, *, creates_per_minute: int) -> IssuedKey:
    """Revoke a live key and issue one of the same name (a creation, counted as one)."""
    with db.transaction() as session:
        _count_creation(session, account_id, creates_per_minute)
        new = accounts.rotate_key(session, account_id, key_id)
        if new is None:
            raise KeyNotFound(key_id)
        return IssuedKey(new, session.get_one(ApiKey, new.key_id))


def revoke_key(db: Database, account_id: int, key_id: int) -> ApiKey:
    """Revoke one of the account's keys (idempotent)."""
    with db.transaction() as session:
        key = accounts.revoke_account_key(session, account_id, key_id)
        if key is None:
            raise KeyNotFound(key_id)
        return key


def webhook_secret(db: Database, account_id: int) -> str:
    """The account's callback signing secret, made on first use."""
    with db.transaction() as session:
        return accounts.webhook_secret(session, account_id)


def rotate_webhook_secret(db: Database, account_id: int) -> str:
    with db.transaction() as session:
        return accounts.rotate_webhook_secret(session, account_id)


def _count_creation(session: Session, account_id: int, per_minute: int) -> None:
    refusal = limits.count_one(session, account_id, limits.KEY_CREATES, per_minute)
    if refusal is not None:
        raise CreationsLimited(refusal)
