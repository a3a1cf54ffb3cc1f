"""Log output: readable lines, or one JSON object per line (KREASERVE_LOG_FORMAT=json).

The standard library's logging does the work; this module only chooses a formatter.
Fields a caller attaches with `extra={"fields": {...}}` (the access log's request id,
route, status...) become JSON keys; any message naming a task gets its `task_id` key, so
a log collector can follow one task through the API, the worker and the callbacks.
Standard library only: the engine child uses it too.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from datetime import UTC, datetime

_TASK_ID = re.compile(r"\btask-[A-Za-z0-9_-]+")


class JSONFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update({k: v for k, v in fields.items() if v is not None})
        if "task_id" not in entry:
            found = _TASK_ID.search(message)
            if found:
                entry["task_id"] = found.group(0)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup(
    log_format: str | None = None, level: str | None = None, *, prefix: str = "%(name)s"
) -> None:
    """Configure the root logger once for this process (stderr). Defaults come from
    KREASERVE_LOG_FORMAT and KREASERVE_LOG_LEVEL, so spawned children match their parent."""
    log_format = log_format or os.environ.get("KREASERVE_LOG_FORMAT", "text")
    level = level or os.environ.get("KREASERVE_LOG_LEVEL", "INFO")
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix} %(levelname)s %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
