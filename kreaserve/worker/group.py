"""One worker per GPU slot, run and stopped together as one."""

from __future__ import annotations

import threading
from collections.abc import Callable

from kreaserve.config import Settings
from kreaserve.db import Database
from kreaserve.storage import Storage
from kreaserve.worker.loop import Worker
from kreaserve.worker.setup import gpu_slots


class WorkerGroup:
    """One `Worker` per GPU slot (see `gpu_slots`), started and stopped together.

    Behaves like a single worker: when one engine cannot start, or one worker's thread dies,
    the group is fatal (and `kreaserve worker` exits non-zero for its supervisor)."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        storage: Storage,
        *,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        self._on_fatal = on_fatal
        self._stop = threading.Event()
        self.workers = [
            Worker(settings, db, storage, on_fatal=self._fatal, visible_devices=slot)
            for slot in gpu_slots(settings.engine_gpus)
        ]
        self.fatal_message: str | None = None

    def _fatal(self, message: str) -> None:
        if self.fatal_message is None:
            self.fatal_message = message
            self._stop.set()
            if self._on_fatal:
                self._on_fatal(message)

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def stop(self) -> None:
        self._stop.set()
        for worker in self.workers:
            worker.request_stop()
        for worker in self.workers:
            worker.stop()

    def request_stop(self) -> None:
        self._stop.set()

    def run_forever(self) -> int:
        """Run until stopped (SIGTERM, Ctrl-C or a fatal engine); the exit status."""
        self.start()
        try:
            while not self._stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()
        return 1 if self.fatal_message else 0
