"""`kreaserve.cli.follow.follow` against a scripted client (no server): it rides out a
dropped connection and a 503 on the same task id, gives up after `reconnect_for`, and
passes other errors through at once."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from kreaserve.cli.follow import follow
from kreaserve.client import KreaserveError

DONE = SimpleNamespace(id="t1", status="completed", progress=100)
DROPPED = httpx.ConnectError("connection refused")


class Scripted:
    """A client whose `wait` raises, or reports and returns, the next scripted outcome."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.asked: list[str] = []

    def wait(self, task_id: str, *, on_update: Any, **_: Any) -> Any:
        self.asked.append(task_id)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        on_update(outcome)
        return outcome


def test_a_dropped_connection_and_a_503_are_ridden_out_on_the_same_task() -> None:
    client = Scripted(DROPPED, KreaserveError(503, "service_unavailable", "restarting"), DONE)
    slept: list[float] = []
    seen: list[Any] = []
    assert follow(client, "t1", on_update=seen.append, sleep=slept.append) is DONE
    assert client.asked == ["t1", "t1", "t1"] and seen == [DONE]
    assert slept == [0.5, 1.0]  # doubling backoff


def test_it_gives_up_after_reconnect_for(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(float(t) for t in range(100))
    monkeypatch.setattr("kreaserve.cli.follow.time.monotonic", lambda: next(clock))
    client = Scripted(*[DROPPED] * 50)
    with pytest.raises(httpx.ConnectError):
        follow(client, "t1", reconnect_for=5, sleep=lambda _s: None)
    assert 3 <= len(client.asked) <= 7


def test_other_errors_end_the_wait_at_once() -> None:
    client = Scripted(KreaserveError(404, "task_not_found", "No task t1."), DONE)
    with pytest.raises(KreaserveError):
        follow(client, "t1", sleep=lambda _s: pytest.fail("no retry expected"))
    assert client.asked == ["t1"]
