"""What operators do to accounts, keys and credits: the rules the admin API (/admin/v1)
and the CLI share, each operation one transaction, refusals as exceptions the caller
words for its audience (an HTTP error, a CLI message)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kreaserve import accounts, contract, ledger, schemas
from kreaserve.db import Database
from kreaserve.db.models import Account, ApiKey

#: An account as operators see it (`accounts.account_summary`).
Summary = dict[str, object]


class AccountNotFound(LookupError):
    def __init__(self, account_id: int) -> None:
        super().__init__(f"No account {account_id}.")
        self.account_id = account_id


class KeyNotFound(LookupError):
    def __init__(self, key: int | str) -> None:
        super().__init__(f"No key {key}.")
        self.key = key


class GrantNotPositive(ValueError):
    """A negative grant: credits are taken away only by an adjustment."""


class CreditsRefused(ValueError):
    """The account's standing refuses the change (the balance would fall below what is
    reserved): the account's state is at fault, not the request."""


@dataclass(frozen=True)
class IssuedKey:
    """A key just made: its secret (shown once), its row, and the account's standing."""

    new: accounts.NewKey
    key: ApiKey
    standing: ledger.Balance


def limit_fields(body: schemas.AccountLimits) -> dict[str, object]:
    """The limits a validated request set (null included: it clears the limit), in the
    units the table stores; a null group is the default group."""
    fields: dict[str, object] = {
        name: getattr(body, name)
        for name in body.model_fields_set
        if name in ("user_group", "requests_per_minute", "max_tasks_in_flight")
    }
    if "daily_spend_cap" in body.model_fields_set:
        cap = body.daily_spend_cap
        fields["daily_spend_cap_units"] = None if cap is None else ledger.to_units(cap)
    if fields.get("user_group", "") is None:
        fields["user_group"] = contract.DEFAULT_USER_GROUP
    return fields


def list_accounts(db: Database) -> list[Summary]:
    with db.read() as session:
        summaries = (
            accounts.account_summary(session, account_id)
            for account_id in accounts.all_account_ids(session)
        )
        return [summary for summary in summaries if summary is not None]


def account(db: Database, account_id: int) -> Summary:
    with db.read() as session:
        found = accounts.account_summary(session, account_id)
    if found is None:
        raise AccountNotFound(account_id)
    return found


def create_account(
    db: Database, name: str, credits_units: int = 0, limits: Mapping[str, object] | None = None
) -> Summary:
    """A new account with an opening grant and its limits (`accounts.LIMIT_FIELDS`)."""
    with db.transaction() as session:
        account_id = accounts.create_account(session, name, credits_units)
        accounts.update_account(session, account_id, **(limits or {}))
        found = accounts.account_summary(session, account_id)
    assert found is not None
    return found


def update_account(db: Database, account_id: int, limits: Mapping[str, object]) -> Summary:
    """Change an account's group or limits (a None value clears a limit)."""
    with db.transaction() as session:
        if not accounts.update_account(session, account_id, **limits):
            raise AccountNotFound(account_id)
        found = accounts.account_summary(session, account_id)
    assert found is not None
    return found


def change_credits(
    db: Database, account_id: int, units: int, kind: str = ledger.GRANT, note: str = ""
) -> Summary:
    """A grant adds credits; an adjustment corrects either way, never below what is
    reserved. The note (kept in the ledger) is cut to 200 characters."""
    if units < 0 and kind == ledger.GRANT:
        raise GrantNotPositive("a grant must be positive; take credits away with an adjustment")
    with db.transaction() as session:
        if session.get(Account, account_id) is None:
            raise AccountNotFound(account_id)
        try:
            ledger.grant(session, account_id, units, note=note[:200], kind=kind)
        except ValueError as exc:
            raise CreditsRefused(str(exc)) from None
        found = accounts.account_summary(session, account_id)
    assert found is not None
    return found


def account_keys(db: Database, account_id: int) -> list[ApiKey]:
    """The account's keys, oldest first, revoked ones included."""
    with db.read() as session:
        if session.get(Account, account_id) is None:
            raise AccountNotFound(account_id)
        return accounts.list_keys(session, account_id)


def all_keys(db: Database) -> list[ApiKey]:
    """Every key of every account, oldest first."""
    with db.read() as session:
        return accounts.all_keys(session)


def issue_key(db: Database, account_id: int | None, name: str, credits_units: int = 0) -> IssuedKey:
    """A new key for the account, granting it `credits_units` first; with no account, for
    a new account of that name opened with `credits_units`."""
    with db.transaction() as session:
        if account_id is None:
            account_id = accounts.create_account(session, name, credits_units)
        elif session.get(Account, account_id) is None:
            raise AccountNotFound(account_id)
        elif credits_units:
            ledger.grant(session, account_id, credits_units, note="keys create")
        new = accounts.create_key(session, account_id, name)
        return IssuedKey(
            new, session.get_one(ApiKey, new.key_id), ledger.balance(session, account_id)
        )


def revoke_key(db: Database, key_id: int) -> ApiKey:
    """Revoke any account's key by id (idempotent)."""
    with db.transaction() as session:
        key = session.get(ApiKey, key_id)
        if key is None:
            raise KeyNotFound(key_id)
        accounts.revoke_account_key(session, key.account_id, key_id)
        return key


def revoke_live_key(db: Database, prefix_or_id: str) -> None:
    """Revoke a live key named by id or shown prefix; KeyNotFound when there is none."""
    with db.transaction() as session:
        if not accounts.revoke_key(session, prefix_or_id):
            raise KeyNotFound(prefix_or_id)
