"""The operators' rules the admin API and the CLI share (kreaserve.admin_service), on
SQLite: each refusal is its own exception, and a refused change writes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kreaserve import admin_service, ledger
from kreaserve.db import Database, upgrade


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    path: Path = tmp_path_factory.mktemp("admin") / "admin.db"
    upgrade(f"sqlite:///{path}")
    database = Database(f"sqlite:///{path}")
    yield database
    database.dispose()


def new_account(db: Database, credits: float = 10) -> int:
    summary = admin_service.create_account(
        db, "ops test", ledger.to_units(credits), {"requests_per_minute": 7}
    )
    assert summary["requests_per_minute"] == 7
    account_id = summary["id"]
    assert isinstance(account_id, int)
    return account_id


def test_accounts_are_created_listed_changed_and_credited(db: Database) -> None:
    account_id = new_account(db)
    assert admin_service.account(db, account_id)["balance"] == 10
    assert account_id in [a["id"] for a in admin_service.list_accounts(db)]
    changed = admin_service.update_account(db, account_id, {"requests_per_minute": None})
    assert changed["requests_per_minute"] is None
    granted = admin_service.change_credits(db, account_id, ledger.to_units(2.5), note="x")
    assert granted["balance"] == 12.5
    taken = admin_service.change_credits(db, account_id, -ledger.to_units(2), ledger.ADJUST)
    assert taken["balance"] == 10.5


def test_unknown_accounts_and_keys_are_refused(db: Database) -> None:
    missing = 10**9
    with pytest.raises(admin_service.AccountNotFound):
        admin_service.account(db, missing)
    with pytest.raises(admin_service.AccountNotFound):
        admin_service.update_account(db, missing, {"requests_per_minute": 3})
    with pytest.raises(admin_service.AccountNotFound):
        admin_service.change_credits(db, missing, 100)
    with pytest.raises(admin_service.AccountNotFound):
        admin_service.account_keys(db, missing)
    with pytest.raises(admin_service.AccountNotFound):
        admin_service.issue_key(db, missing, "k")
    with pytest.raises(admin_service.KeyNotFound):
        admin_service.revoke_key(db, missing)
    with pytest.raises(admin_service.KeyNotFound):
        admin_service.revoke_live_key(db, "ks_nosuchkey")


def test_a_negative_grant_and_an_adjustment_below_the_reserve_are_refused(db: Database) -> None:
    account_id = new_account(db, credits=1)
    with pytest.raises(admin_service.GrantNotPositive):
        admin_service.change_credits(db, account_id, -1, ledger.GRANT)
    with pytest.raises(admin_service.CreditsRefused):
        admin_service.change_credits(db, account_id, -ledger.to_units(5), ledger.ADJUST)
    assert admin_service.account(db, account_id)["balance"] == 1  # nothing written


def test_keys_are_issued_listed_and_revoked(db: Database) -> None:
    opened = admin_service.issue_key(db, None, "fresh", ledger.to_units(3))
    assert opened.standing.balance_units == ledger.to_units(3)
    account_id = opened.new.account_id
    second = admin_service.issue_key(db, account_id, "second", ledger.to_units(1))
    assert second.standing.balance_units == ledger.to_units(4)
    assert second.key.prefix == second.new.prefix and second.new.secret.startswith("ks_")
    keys = admin_service.account_keys(db, account_id)
    assert [k.name for k in keys] == ["fresh", "second"]
    assert {k.id for k in keys} <= {k.id for k in admin_service.all_keys(db)}
    assert admin_service.revoke_key(db, opened.key.id).revoked_at is not None
    admin_service.revoke_live_key(db, second.new.prefix)
    with pytest.raises(admin_service.KeyNotFound):  # no longer live
        admin_service.revoke_live_key(db, second.new.prefix)
    assert all(k.revoked_at for k in admin_service.account_keys(db, account_id))
