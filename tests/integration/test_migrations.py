"""The migrations build exactly the schema the models describe, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from kreaserve.db import Database, upgrade
from kreaserve.db.models import Base


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    upgrade(database_url)  # a second run is a no-op
    db = Database(database_url)
    try:
        with db.engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        db.dispose()
    assert diff == []
