"""Apply the Alembic migrations that ship inside the package.

`upgrade` first reads the database's revision with SQLAlchemy alone and imports Alembic only
when there is something to apply: Alembic, Mako and the Pygments Mako pulls in are about
15 MB that a long-running API process would otherwise keep for nothing (BENCHMARKS.md,
issue 12). The newest revision is the highest migration number in ``versions/`` (files are
named ``NNNN_*.py`` with ``revision = "NNNN"``); tests/unit/test_migrate_head.py holds it to
Alembic's own answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at our migrations and the given database."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def shipped_head() -> str:
    """The newest migration shipped, from the file names (no Alembic import)."""
    return max(path.name.split("_", 1)[0] for path in (MIGRATIONS / "versions").glob("[0-9]*_*.py"))


def at_head(url: str) -> bool:
    """Whether the database's Alembic revision is the newest shipped. False on any error
    (no such table, no database, a bad URL): `upgrade` then lets Alembic do and say it."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    from kreaserve.db.session import normalize_url

    try:
        engine = sqlalchemy.create_engine(normalize_url(url), poolclass=NullPool)
        try:
            with engine.connect() as connection:
                rows = connection.exec_driver_sql("SELECT version_num FROM alembic_version")
                revisions = {row[0] for row in rows}
        finally:
            engine.dispose()
    except sqlalchemy.exc.SQLAlchemyError:
        return False
    return revisions == {shipped_head()}


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database schema up to `revision` (idempotent)."""
    if revision == "head" and at_head(url):
        return
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def head_revision() -> str | None:
    """The newest migration shipped (where `upgrade` brings a database)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
