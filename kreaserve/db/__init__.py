"""Persistence: tables, connections and schema migrations."""

from kreaserve.db.migrate import upgrade
from kreaserve.db.session import Database

__all__ = ["Database", "upgrade"]
