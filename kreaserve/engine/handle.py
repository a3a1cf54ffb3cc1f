"""What the worker needs of an engine: a small protocol, so that `EngineProcess` (a spawned
child) and a fake engine in the worker's tests are interchangeable."""

from __future__ import annotations

from typing import Protocol

from kreaserve.engine import messages as m


class EngineStartError(Exception):
    """The child could not load its weights; the message says what to do."""


class EngineDied(Exception):
    """The child process is gone (crashed, killed, or its pipe broke)."""


class EngineProtocolError(EngineDied):
    """The child sent something that is not a message of the protocol; it is stopped."""


class EngineHandle(Protocol):
    """An engine the worker starts, feeds batches, reads answers from and stops."""

    @property
    def alive(self) -> bool: ...

    def start(self, timeout: float) -> m.Ready:
        """Load and warm up; raises EngineStartError with a message for the operator."""
        ...

    def new_job_id(self) -> int: ...

    def submit(self, batch: m.GenerateBatch) -> None:
        """Send a batch; raises EngineDied when the engine is gone."""
        ...

    def cancel(self, job: int) -> None: ...

    def next_message(self, timeout: float) -> m.EngineMessage | None:
        """The next answer, or None after `timeout` seconds; raises EngineDied."""
        ...

    def stop(self, grace: float = 10.0) -> None: ...
