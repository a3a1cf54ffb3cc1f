"""Build a cache folder once: under a file lock, into a temporary folder, marker last,
then renamed into place. Several threads or processes may ask at once; one builds, the
others wait and use its result, and a half-written folder is never mistaken for a
finished one. Used for the weight presets and the moderation encoder export."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `lock_path` (created if missing)."""
    with open(lock_path, "a+b") as lock_file:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)


def remove_aside(path: Path) -> None:
    """Move `path` aside (atomically) and delete it, so no reader sees it half-deleted."""
    trash = path.parent / f".trash-{path.name}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def build_once(
    cache_dir: Path,
    dirname: str,
    *,
    marker_file: str,
    is_complete: Callable[[Path], bool],
    build: Callable[[Path], dict[str, Any]],
) -> Path:
    """`<cache_dir>/<dirname>`, made by `build(tmp)` on first use.

    `build` fills the temporary folder and returns the marker's content; `is_complete`
    tells a finished folder (it should check the marker)."""
    cache_dir = Path(cache_dir).expanduser()
    target = cache_dir / dirname
    if is_complete(target):
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with locked(cache_dir / f".{dirname}.lock"):
        if is_complete(target):  # another process built it while we waited
            return target
        if target.exists():  # left over from something else; not a finished build
            remove_aside(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dirname}.tmp-", dir=cache_dir))
        try:
            marker = build(tmp)
            with open(tmp / marker_file, "w") as handle:
                json.dump(marker, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o755)  # mkdtemp made it private; the cache is shared, read-only data
            try:
                os.rename(tmp, target)
            except OSError:
                # Someone not holding our lock (another host on a shared folder) got there first.
                if not is_complete(target):
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target
