"""Accounts and their API keys: create, authenticate, revoke. Keys are stored as hashes.

A key is 256 random bits, so a fast SHA-256 is a safe digest (no password stretching
is needed for high-entropy secrets) and lets every request authenticate in one lookup
(auth.py, which also caches it).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from kreaserve import ledger
from kreaserve.db.models import Account, ApiKey
from kreaserve.db.rows import changed_rows
from kreaserve.outbound import signing

KEY_PREFIX = "ks_"
#: how many characters of a key may be shown and logged
SHOWN_PREFIX_LEN = 11


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the account and the key used."""

    account_id: int
    key_id: int
    user_group: str
    #: the account's own limits; None means the server's default
    requests_per_minute: int | None = None
    max_tasks_in_flight: int | None = None


@dataclass(frozen=True)
class NewKey:
    """A freshly created key; `secret` is shown once and never stored."""

    account_id: int
    key_id: int
    name: str
    prefix: str
    secret: str


def create_account(
    session: Session, name: str, credits_units: int = 0, user_group: str = "default"
) -> int:
    """A new account, with an opening grant when `credits_units` > 0."""
    account = Account(
        name=name, user_group=user_group, balance_units=0, reserved_units=0, created_at=time.time()
    )
    session.add(account)
    session.flush()
    if credits_units:
        ledger.grant(session, account.id, credits_units, note="opening grant")
    return account.id


def create_key(session: Session, account_id: int, name: str) -> NewKey:
    """Issue a key for an account."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    prefix = secret[:SHOWN_PREFIX_LEN]
    key = ApiKey(
        account_id=account_id,
        name=name,
        prefix=prefix,
        key_hash=hash_key(secret),
        created_at=time.time(),
    )
    session.add(key)
    session.flush()
    return NewKey(account_id=account_id, key_id=key.id, name=name, prefix=prefix, secret=secret)


def live_key_count(session: Session, account_id: int) -> int:
    """The account's keys not revoked, with the account row locked (PostgreSQL; SQLite's
    write transaction is locked already), so concurrent creations are counted in turn."""
    session.execute(select(Account.id).where(Account.id == account_id).with_for_update())
    return session.execute(
        select(func.count())
        .select_from(ApiKey)
        .where(ApiKey.account_id == account_id, ApiKey.revoked_at.is_(None))
    ).scalar_one()


def revoke_key(session: Session, prefix_or_id: str) -> bool:
    """Revoke a key by id or shown prefix; False when no such live key."""
    condition = (
        (ApiKey.id == int(prefix_or_id))
        if prefix_or_id.isdigit()
        else (ApiKey.prefix == prefix_or_id)
    )
    result = session.execute(
        update(ApiKey).where(condition, ApiKey.revoked_at.is_(None)).values(revoked_at=time.time())
    )
    return changed_rows(result) > 0


def webhook_secret(session: Session, account_id: int) -> str:
    """The account's callback signing secret, made on first use."""
    session.execute(
        update(Account)
        .where(Account.id == account_id, Account.webhook_secret.is_(None))
        .values(webhook_secret=signing.new_secret())
    )
    secret = session.execute(
        select(Account.webhook_secret).where(Account.id == account_id)
    ).scalar_one()
    assert secret is not None  # made just above when it was missing
    return secret


def rotate_webhook_secret(session: Session, account_id: int) -> str:
    """Replace the account's signing secret; callbacks sent from now on use the new one."""
    secret = signing.new_secret()
    session.execute(update(Account).where(Account.id == account_id).values(webhook_secret=secret))
    return secret


def list_keys(session: Session, account_id: int) -> list[ApiKey]:
    """The account's keys, oldest first (revoked ones included)."""
    return list(
        session.execute(
            select(ApiKey).where(ApiKey.account_id == account_id).order_by(ApiKey.id)
        ).scalars()
    )


def revoke_account_key(session: Session, account_id: int, key_id: int) -> ApiKey | None:
    """Revoke one of the account's keys (idempotent); None when it has no such key."""
    key = session.execute(
        select(ApiKey).where(ApiKey.id == key_id, ApiKey.account_id == account_id)
    ).scalar_one_or_none()
    if key is not None and key.revoked_at is None:
        key.revoked_at = time.time()
    return key


def rotate_key(session: Session, account_id: int, key_id: int) -> NewKey | None:
    """Replace a live key with a new one of the same name; the old one stops at once."""
    key = session.execute(
        select(ApiKey).where(
            ApiKey.id == key_id, ApiKey.account_id == account_id, ApiKey.revoked_at.is_(None)
        )
    ).scalar_one_or_none()
    if key is None:
        return None
    key.revoked_at = time.time()
    return create_key(session, account_id, key.name)


#: Account fields an operator may change, with what they mean in units.
LIMIT_FIELDS = ("user_group", "requests_per_minute", "max_tasks_in_flight", "daily_spend_cap_units")


def update_account(session: Session, account_id: int, **fields: object) -> bool:
    """Change an account's group or limits (None clears a limit); False when unknown."""
    unknown = set(fields) - set(LIMIT_FIELDS)
    assert not unknown, unknown
    if not fields:
        return session.get(Account, account_id) is not None
    return (
        changed_rows(
            session.execute(update(Account).where(Account.id == account_id).values(**fields))
        )
        == 1
    )


def account_summary(session: Session, account_id: int) -> dict[str, object] | None:
    """An account as operators see it: standing, group, limits, keys."""
    account = session.get(Account, account_id)
    if account is None:
        return None
    keys = list_keys(session, account_id)
    return {
        "object": "account",
        "id": account.id,
        "name": account.name,
        "user_group": account.user_group,
        "created": int(account.created_at),
        "balance": ledger.to_credits(account.balance_units),
        "reserved": ledger.to_credits(account.reserved_units),
        "available": ledger.to_credits(account.balance_units - account.reserved_units),
        "requests_per_minute": account.requests_per_minute,
        "max_tasks_in_flight": account.max_tasks_in_flight,
        "daily_spend_cap": (
            ledger.to_credits(account.daily_spend_cap_units)
            if account.daily_spend_cap_units is not None
            else None
        ),
        "keys": {"active": sum(1 for k in keys if k.revoked_at is None), "total": len(keys)},
    }


def all_keys(session: Session) -> list[ApiKey]:
    """Every key of every account, oldest first (revoked ones included)."""
    return list(session.execute(select(ApiKey).order_by(ApiKey.id)).scalars())


def all_account_ids(session: Session) -> list[int]:
    return list(session.execute(select(Account.id).order_by(Account.id)).scalars())
