"""Secrets every API process of a fleet must agree on, held in the shared database.

Replicas behind a load balancer must sign result URLs with one key, or a link one replica
made fails on the next. Rather than asking the operator to hand the same secret to every
process, the first process that needs a secret generates it and inserts it with
`ON CONFLICT DO NOTHING`; every process, the racing ones included, then reads back the
one row that won. No lock, no retry loop: the primary key decides.
"""

from __future__ import annotations

import secrets
import time

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from kreaserve.config import Settings
from kreaserve.db import Database
from kreaserve.db.models import ServiceSecret

#: The HMAC key of `/files/...` result URLs (kreaserve/storage/signing.py).
URL_SIGNING_KEY = "url_signing_key"


class SharedSecretError(RuntimeError):
    """The database could not hand out a shared secret; the message says what to set."""


def shared_secret(db: Database, name: str) -> str:
    """The secret called `name`, created (64 hex digits) by the first caller."""
    insert = postgres_insert if db.is_postgres else sqlite_insert
    statement = (
        insert(ServiceSecret)
        .values(name=name, value=secrets.token_hex(32), created_at=time.time())
        .on_conflict_do_nothing(index_elements=["name"])
    )
    with db.transaction() as session:
        session.execute(statement)
    with db.transaction() as session:
        return session.execute(
            select(ServiceSecret.value).where(ServiceSecret.name == name)
        ).scalar_one()


def url_signing_key(settings: Settings, db: Database) -> bytes:
    """The key that signs result URLs.

    KREASERVE_SECRET_KEY when set; else, on SQLite (one machine, the embedded default),
    the key file in the data folder; else (a shared PostgreSQL) the key held in the
    database, so that every replica signs alike with nothing shared by hand.
    """
    if settings.secret_key:
        return settings.secret_key.encode()
    if not db.is_postgres:
        return settings.hmac_key()
    try:
        return shared_secret(db, URL_SIGNING_KEY).encode()
    except Exception as exc:  # noqa: BLE001 - any database failure gets the same advice
        raise SharedSecretError(
            f"cannot read or create the shared URL-signing key in the database "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); set "
            f"KREASERVE_SECRET_KEY to one value on every API process instead"
        ) from exc
