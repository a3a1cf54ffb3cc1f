"""The storage port: put, read and delete result images by key."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class Storage(Protocol):
    """A place for result images; keys look like `<task_id>/0.png`."""

    def put(self, key: str, data: bytes) -> None: ...

    def path(self, key: str) -> Path | None:
        """A local file to serve the key from, or None when it is gone."""
        ...

    def delete(self, key: str) -> None: ...
