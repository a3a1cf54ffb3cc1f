"""Secrets a fleet must share, held in the database: generated once, the same for every
process, even when many start at once; and a one-line refusal when the database cannot
hold them."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from kreaserve.config import Settings
from kreaserve.db import Database, upgrade
from kreaserve.db.models import ServiceSecret
from kreaserve.service_secrets import (
    URL_SIGNING_KEY,
    SharedSecretError,
    shared_secret,
    url_signing_key,
)
from tests.conftest import free_port, make_postgres_database


def test_concurrent_first_starts_agree_on_one_secret(database_url: str) -> None:
    """Twelve processes' worth of connections (one engine each) race for the first key."""
    barrier = threading.Barrier(12)

    def first_start(_: int) -> str:
        db = Database(database_url)
        try:
            barrier.wait()
            return shared_secret(db, "race")
        finally:
            db.dispose()

    with ThreadPoolExecutor(12) as pool:
        values = set(pool.map(first_start, range(12)))
    assert len(values) == 1 and len(values.pop()) == 64
    db = Database(database_url)
    with db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(ServiceSecret)) == 1
    assert shared_secret(db, "another") != shared_secret(db, "race")
    db.dispose()


def test_postgres_replicas_sign_with_the_databases_key(
    postgres_server: str, tmp_path: Path
) -> None:
    url, drop = make_postgres_database(postgres_server)
    try:
        upgrade(url)
        replicas = [Database(url) for _ in range(2)]
        keys = [
            url_signing_key(Settings(data_dir=tmp_path / f"replica-{n}", database_url=url), db)
            for n, db in enumerate(replicas)
        ]
        assert keys[0] == keys[1]
        assert keys[0] == shared_secret(replicas[0], URL_SIGNING_KEY).encode()
        assert not list(tmp_path.glob("replica-*/secret.key"))  # no disk involved
        configured = Settings(data_dir=tmp_path, database_url=url, secret_key="by-hand")
        assert url_signing_key(configured, replicas[0]) == b"by-hand"
        for db in replicas:
            db.dispose()
    finally:
        drop()


def test_sqlite_keeps_the_key_file_in_the_data_folder(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    upgrade(url)
    db = Database(url)
    settings = Settings(data_dir=tmp_path, database_url=url)
    key = url_signing_key(settings, db)
    assert (tmp_path / "secret.key").read_text().strip().encode() == key
    with db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(ServiceSecret)) == 0
    db.dispose()


def drop_secrets_table(url: str) -> None:
    db = Database(url)
    with db.transaction() as session:
        session.execute(text("DROP TABLE service_secrets"))
    db.dispose()


def test_a_database_that_cannot_hold_the_key_says_what_to_set(
    postgres_server: str, tmp_path: Path
) -> None:
    url, drop = make_postgres_database(postgres_server)
    try:
        upgrade(url)
        drop_secrets_table(url)
        db = Database(url)
        with pytest.raises(
            SharedSecretError, match="set KREASERVE_SECRET_KEY to one value on every API process"
        ):
            url_signing_key(Settings(data_dir=tmp_path, database_url=url), db)
        db.dispose()
        done = subprocess.run(
            [sys.executable, "-m", "kreaserve.cli", "serve", "--no-worker"],
            env={
                **os.environ,
                "KREASERVE_DATABASE_URL": url,
                "KREASERVE_DATA_DIR": str(tmp_path / "data"),
                "KREASERVE_PORT": str(free_port()),
            },
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 1
        errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and "KREASERVE_SECRET_KEY" in errors[0], done.stderr
    finally:
        drop()
