"""A worker's row in the worker registry: its state and its engine, renewed on a timer.

An unreachable database only delays a heartbeat (with a backoff); it never stops the worker.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from kreaserve import worker_registry
from kreaserve.db import Database
from kreaserve.states import WorkerState
from kreaserve.worker.outage import Backoff, brief, is_outage

log = logging.getLogger("kreaserve.worker")

HEARTBEAT_SECONDS = 5.0


class Heartbeat:
    """What the registry shows of one worker; `state` and `info` are the worker's to set."""

    def __init__(self, db: Database, worker_id: str, weights: str) -> None:
        self.db, self.worker_id, self.weights = db, worker_id, weights
        self.state: str = WorkerState.STARTING
        self.info: dict[str, str | None] = {}
        self._backoff = Backoff()

    def beat(self) -> None:
        """Record the state now; raises what the database raises."""
        worker_registry.worker_heartbeat(
            self.db,
            self.worker_id,
            socket.gethostname(),
            os.getpid(),
            self.state,
            weights=self.info.get("weights") or self.weights,
            device=self.info.get("device"),
            warning=self.info.get("warning"),
            message=self.info.get("message"),
        )

    def try_beat(self) -> None:
        """Record the state unless the database is unreachable (then the timer retries)."""
        try:
            self.beat()
        except Exception as exc:
            if not is_outage(exc):
                raise
            delay = self._backoff.failed()
            log.warning(
                "heartbeat not recorded, the database is unreachable (%s); next try in %.1f s",
                brief(exc),
                delay,
            )
        else:
            self._backoff.succeeded()

    def run(self, stop: threading.Event) -> None:
        """Beat every HEARTBEAT_SECONDS until `stop` is set (a thread's body)."""
        while not stop.wait(HEARTBEAT_SECONDS):
            if not self._backoff.waiting:
                self.try_beat()
