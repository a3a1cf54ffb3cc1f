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
import time
from datetime import UTC, datetime

_TASK_ID = re.compile(r"\btask-[A-Za-z0-9_-]+")


class TextFormatter(logging.Formatter):
    """logging's own Formatter, with the date and time of the record's second formatted
    once per second (`time.localtime` and `strftime` were a tenth of an access line)."""

    _second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        msec_format = self.default_msec_format
        if datefmt is not None or msec_format is None or self.converter is not time.localtime:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if self._second[0] != second:
            self._second = (second, time.strftime(self.default_time_format, time.localtime(second)))
        return msec_format % (self._second[1], record.msecs)


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
        handler.setFormatter(TextFormatter(f"%(asctime)s {prefix} %(levelname)s %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
