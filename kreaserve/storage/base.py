"""The storage port: put, delete and link result images by key (keys come from
`kreaserve.storage.keys.result_key`)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class StorageError(RuntimeError):
    """The store refused or could not be reached; the message is one line for people."""


class Storage(Protocol):
    """A place for result images; keys are made by `result_key`:
    `<task_id>/<attempt>-<index>.<png|jpg|webp>` (`kreaserve.images.media_type_of` gives
    a key's Content-Type).

    `put` stores the whole image or nothing (no reader ever sees a partial object), and
    raises StorageError when the store is unavailable."""

    def put(self, key: str, data: bytes) -> None: ...

    def path(self, key: str) -> Path | None:
        """A local file to serve the key from, or None when it is gone (or not local)."""
        ...

    def presigned_url(self, key: str, expires_at: int) -> str | None:
        """A direct link to the object valid until `expires_at` (Unix seconds), or None
        when this store has none (the API serves the file itself)."""
        ...

    def delete(self, key: str) -> None: ...

    def check(self) -> None:
        """Raise StorageError (one line: what is wrong) unless the store is usable."""
        ...
