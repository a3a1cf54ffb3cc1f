"""Result images in a local folder, written atomically."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from kreaserve.private import private_dir

_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_.-]+)*$")


class LocalStorage:
    """Images under one root folder; a key is a relative path without '..'."""

    def __init__(self, root: Path) -> None:
        self.root = private_dir(Path(root).resolve())

    def _file(self, key: str) -> Path:
        if not _KEY_RE.match(key) or ".." in key.split("/"):
            raise ValueError(f"invalid storage key {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes) -> None:
        """Write the whole file or nothing (temp file, fsync, rename)."""
        target = self._file(key)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")  # created 0600
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def path(self, key: str) -> Path | None:
        file = self._file(key)
        return file if file.is_file() else None

    def presigned_url(self, key: str, expires_at: int) -> str | None:
        return None  # the API serves local files itself, behind its own signed URLs

    def check(self) -> None:
        return None  # the folder was made in __init__; a failure there already raised

    def delete(self, key: str) -> None:
        file = self._file(key)
        file.unlink(missing_ok=True)
        try:
            file.parent.rmdir()  # the task's folder, once empty
        except OSError:
            pass
