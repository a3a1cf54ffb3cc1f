"""The worker's handle on an engine child process: start, submit batches, read answers, cancel.

Imports neither torch nor anything of the service: the child is spawned, so the parent only
needs `kreaserve.engine.child` by name. A child that dies or hangs never takes the worker
down: `next_message` raises `EngineDied`, the worker fails or requeues the jobs it had sent,
and starts a new child. Anything the child sends that is not a message of the protocol stops
it with `EngineProtocolError` (an `EngineDied`) instead of being dropped.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import time
from multiprocessing.connection import Connection
from typing import Any

from kreaserve.engine import child
from kreaserve.engine import messages as m
from kreaserve.engine.handle import EngineDied, EngineProtocolError, EngineStartError

log = logging.getLogger("kreaserve.engine")

__all__ = ["EngineDied", "EngineProcess", "EngineProtocolError", "EngineStartError"]


class EngineProcess:
    """One engine child process and the pipe to it (an `EngineHandle`)."""

    def __init__(self, load: m.Load) -> None:
        self.load = load
        self._ctx = mp.get_context("spawn")
        self._process: mp.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._cancel_slots = self._ctx.Array("q", [-1] * child.CANCEL_SLOTS, lock=False)
        self._next_job = 0
        self.ready: m.Ready | None = None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self, timeout: float) -> m.Ready:
        """Spawn the child and wait for it to load and warm up."""
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        self._process = self._spawn(child_conn)
        child_conn.close()
        self._conn = parent_conn
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if parent_conn.poll(0.25):
                try:
                    message = parent_conn.recv()
                except EOFError:
                    break
                if isinstance(message, m.Ready):
                    self.ready = message
                    return message
                if isinstance(message, m.LoadFailed):
                    self.stop()
                    raise EngineStartError(message.message)
                self.stop(grace=0)
                raise EngineStartError(f"The engine sent {message!r:.200} instead of Ready.")
            elif not self._process.is_alive():
                break
        else:
            self.stop()
            raise EngineStartError(
                f"The engine did not finish loading '{self.load.weights}' within {timeout:.0f} s. "
                "Raise KREASERVE_ENGINE_START_TIMEOUT or choose other weights with --weights."
            )
        code = self._process.exitcode
        self.stop()
        raise EngineStartError(
            f"The engine process exited while loading '{self.load.weights}' (exit code {code}); "
            "see the log above for its error."
        )

    def _spawn(self, child_conn: Connection) -> Any:
        """Start the child process on its end of the pipe (a test may run it otherwise)."""
        process = self._ctx.Process(
            target=child.main,
            args=(child_conn, self._cancel_slots, self.load),
            name="kreaserve-engine",
            daemon=True,
        )
        process.start()
        return process

    def new_job_id(self) -> int:
        self._next_job += 1
        return self._next_job

    def submit(self, batch: m.GenerateBatch) -> None:
        """Send a batch; its answers come back through `next_message`."""
        assert self._conn is not None, "engine not started"
        try:
            self._conn.send(batch)
        except (BrokenPipeError, OSError) as exc:
            raise EngineDied(self._death()) from exc

    def cancel(self, job: int) -> None:
        """Ask the child to drop `job` before its next denoising step (or skip its decode)."""
        self._cancel_slots[job % child.CANCEL_SLOTS] = job

    def next_message(self, timeout: float) -> m.EngineMessage | None:
        """The child's next message, or None when nothing came within `timeout` seconds."""
        if self._conn is None or self._process is None:
            raise EngineDied("The engine process is not running.")
        try:
            if self._conn.poll(timeout):
                message = self._conn.recv()
                if isinstance(message, m.EngineMessage):
                    return message
                self.stop(grace=0)
                raise EngineProtocolError(
                    f"The engine process sent an unknown message {message!r:.200}; it was stopped."
                )
        except (EOFError, OSError) as exc:
            raise EngineDied(self._death()) from exc
        if not self._process.is_alive():
            raise EngineDied(self._death())
        return None

    def _death(self) -> str:
        code = self._process.exitcode if self._process else None
        self.stop(grace=0)
        return f"The engine process stopped unexpectedly (exit code {code})."

    def stop(self, grace: float = 10.0) -> None:
        """Ask the child to exit, then make sure it has."""
        process, conn = self._process, self._conn
        self._process, self._conn, self.ready = None, None, None
        if conn is not None:
            try:
                if grace and process is not None and process.is_alive():
                    conn.send(m.Shutdown())
            except (BrokenPipeError, OSError):
                pass
        if process is not None:
            process.join(grace)
            if process.is_alive():
                process.kill()
                process.join(5)
        if conn is not None:
            conn.close()
