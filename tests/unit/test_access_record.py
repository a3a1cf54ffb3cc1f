"""The access line made cheaply (kreaserve.api.observe, kreaserve.logs) is the line the
logging module would make: the same record attributes, the same text, the record
factory of a program that installs one still used."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from kreaserve import logs
from kreaserve.api import observe

ARGS = ("GET", "/v1/tasks/{task_id}", 200, 1.25, "abc", 7, " task=task-unified-1-x")
FIELDS = {"request_id": "abc", "status": 200}
MOMENTS = (0.0, 1764424800.0, 1764424800.999, 1764424801.0004, 1764424801.5, 1764511200.25)


def made_by_logging() -> logging.LogRecord:
    return observe.log.makeRecord(
        observe.log.name,
        logging.INFO,
        observe.__file__,
        0,
        observe._LINE,
        ARGS,
        None,
        "__call__",
        {"fields": FIELDS},
    )


def test_the_record_has_logging_s_attributes() -> None:
    theirs, mine = made_by_logging(), observe._record(ARGS, FIELDS)
    assert set(mine.__dict__) == set(theirs.__dict__)
    for name, value in theirs.__dict__.items():
        if name not in ("created", "msecs", "relativeCreated"):
            assert getattr(mine, name) == value, name
    assert abs(mine.created - theirs.created) < 1
    assert mine.msecs == int((mine.created - int(mine.created)) * 1000)
    assert abs(mine.relativeCreated - theirs.relativeCreated) < 1000
    assert mine.getMessage() == theirs.getMessage()


def test_each_thread_s_record_names_it() -> None:
    names = []
    worker = threading.Thread(
        target=lambda: names.append(observe._record(ARGS, FIELDS).threadName), name="other"
    )
    worker.start()
    worker.join()
    assert names == ["other"]
    assert observe._record(ARGS, FIELDS).threadName == threading.current_thread().name


def test_the_text_is_logging_s_text() -> None:
    line = "%(asctime)s kreaserve %(levelname)s %(message)s"
    mine, theirs = logs.TextFormatter(line), logging.Formatter(line)
    for moment in (*MOMENTS, *reversed(MOMENTS)):
        record = made_by_logging()
        record.created, record.msecs = moment, int((moment - int(moment)) * 1000) + 0.0
        assert mine.format(record) == theirs.format(record)


@pytest.fixture
def factory() -> Iterator[list[logging.LogRecord]]:
    made: list[logging.LogRecord] = []
    original = logging.getLogRecordFactory()

    def make(*args, **kwargs) -> logging.LogRecord:  # type: ignore[no-untyped-def]
        record = original(*args, **kwargs)
        record.traced = True
        made.append(record)
        return record

    logging.setLogRecordFactory(make)
    yield made
    logging.setLogRecordFactory(original)


def test_a_record_factory_of_the_program_is_used(factory: list[logging.LogRecord]) -> None:
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    keep = Keep()
    observe.log.addHandler(keep)
    level = observe.log.level
    observe.log.setLevel(logging.INFO)
    try:
        scope = {"state": {"account_id": 7}, "path_params": {}}
        observe._log_access(scope, "GET", "/v1/credits", 200, 0.001, "abc")
    finally:
        observe.log.removeHandler(keep)
        observe.log.setLevel(level)
    assert len(seen) == 1 and seen[0] is factory[0] and seen[0].traced  # type: ignore[attr-defined]
