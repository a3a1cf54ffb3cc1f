"""Files and folders that only the service's own user may read: the data folder (0700) and
what it holds (0600): the SQLite database with its WAL (webhook secrets, signed result
URLs in callback bodies), result images and the URL-signing key.

Modes are given at creation (`os.open`/`mkdir` with the mode), never by a chmod after the
content is written, so no other user can open a file in between; SQLite creates its WAL
and shared-memory files with the database file's own mode. Files and folders left open by
an older version are closed when the service starts (when they are ours to change).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("kreaserve")

DIR_MODE = 0o700
FILE_MODE = 0o600


def _close(path: Path, wanted: int) -> None:
    """chmod an existing path of ours down to `wanted`; a path of another user is left
    alone with a warning (the operator chose that layout)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    if stat.S_IMODE(info.st_mode) == wanted:
        return
    if info.st_uid != os.getuid():
        log.warning(
            "%s is readable by others and not ours to change (mode %o)",
            path,
            stat.S_IMODE(info.st_mode),
        )
        return
    os.chmod(path, wanted)


def private_dir(path: Path) -> Path:
    """Create the folder (and missing parents) as 0700, or close an existing one to 0700."""
    path = Path(path)
    if not path.is_dir():
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _close(path, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create the file empty as 0600 if it is missing, else close it to 0600."""
    path = Path(path)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        _close(path, FILE_MODE)
    return path


def write_new(path: Path, data: bytes) -> None:
    """Write a new file created 0600 in one step; FileExistsError when it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
