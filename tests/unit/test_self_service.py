"""An account holder's own keys and callback secret (kreaserve.self_service), on SQLite:
the bounds on live keys and on creations per minute, and keys of other accounts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kreaserve import admin_service, self_service
from kreaserve.db import Database, upgrade


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    path: Path = tmp_path_factory.mktemp("self") / "self.db"
    upgrade(f"sqlite:///{path}")
    database = Database(f"sqlite:///{path}")
    yield database
    database.dispose()


def new_account(db: Database) -> int:
    return admin_service.issue_key(db, None, "first").new.account_id


def test_keys_are_created_up_to_the_most_live_keys(db: Database) -> None:
    account_id = new_account(db)
    made = self_service.create_key(db, account_id, "second", max_keys=2, creates_per_minute=10)
    assert made.key.name == "second" and made.new.secret.startswith("ks_")
    with pytest.raises(self_service.TooManyKeys):
        self_service.create_key(db, account_id, "third", max_keys=2, creates_per_minute=10)
    self_service.revoke_key(db, account_id, made.key.id)  # a revoked key no longer counts
    self_service.create_key(db, account_id, "third", max_keys=2, creates_per_minute=10)
    names = [(k.name, k.revoked_at is None) for k in self_service.list_keys(db, account_id)]
    assert names == [("first", True), ("second", False), ("third", True)]


def test_creations_and_rotations_are_counted_per_minute(db: Database) -> None:
    account_id = new_account(db)
    first = self_service.list_keys(db, account_id)[0]
    rotated = self_service.rotate_key(db, account_id, first.id, creates_per_minute=2)
    assert rotated.key.name == "first" and rotated.key.id != first.id
    self_service.create_key(db, account_id, "x", max_keys=10, creates_per_minute=2)
    with pytest.raises(self_service.CreationsLimited) as refused:
        self_service.create_key(db, account_id, "y", max_keys=10, creates_per_minute=2)
    assert refused.value.refusal.retry_after > 0
    assert len(self_service.list_keys(db, account_id)) == 3  # the refused one was not made


def test_another_accounts_key_is_not_found(db: Database) -> None:
    mine, theirs = new_account(db), new_account(db)
    their_key = self_service.list_keys(db, theirs)[0].id
    with pytest.raises(self_service.KeyNotFound):
        self_service.revoke_key(db, mine, their_key)
    with pytest.raises(self_service.KeyNotFound):
        self_service.rotate_key(db, mine, their_key, creates_per_minute=10)
    assert self_service.list_keys(db, theirs)[0].revoked_at is None


def test_the_callback_secret_is_made_once_and_rotated(db: Database) -> None:
    account_id = new_account(db)
    secret = self_service.webhook_secret(db, account_id)
    assert secret.startswith("whsec_") and self_service.webhook_secret(db, account_id) == secret
    rotated = self_service.rotate_webhook_secret(db, account_id)
    assert rotated != secret and self_service.webhook_secret(db, account_id) == rotated
