"""The worker's handle on an engine child process: start, generate, cancel, stop.

Imports neither torch nor anything of the service: the child is spawned, so the
parent only needs `kreaserve.engine.child` by name. A child that dies or hangs never
takes the worker down: the job ends Failed (retryable) and the child can be restarted.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

from kreaserve.engine import child
from kreaserve.engine import messages as m

log = logging.getLogger("kreaserve.engine")

JobOutcome = m.Result | m.Cancelled | m.Failed


class EngineStartError(Exception):
    """The child could not load its weights; the message says what to do."""


class EngineProcess:
    """One engine child process and the pipe to it."""

    def __init__(self, load: m.Load) -> None:
        self.load = load
        self._ctx = mp.get_context("spawn")
        self._process: mp.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._cancel_job = self._ctx.Value("q", -1)
        self._next_job = 0
        self.ready: m.Ready | None = None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def start(self, timeout: float) -> m.Ready:
        """Spawn the child and wait for it to load and warm up."""
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        self._process = self._ctx.Process(
            target=child.main, args=(child_conn, self._cancel_job, self.load),
            name="kreaserve-engine", daemon=True,
        )
        self._process.start()
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

    def cancel(self, job: int) -> None:
        """Ask the child to stop `job` before its next denoising step."""
        self._cancel_job.value = job

    def run(self, request: m.Generate, *, on_progress: Callable[[int, int], None],
            tick: Callable[[], None], timeout: float, tick_seconds: float = 0.25) -> JobOutcome:
        """Send one job and wait for its outcome, calling `tick` every `tick_seconds`
        (to renew leases and look for cancellation) and `on_progress` on each step."""
        assert self._conn is not None and self._process is not None, "engine not started"
        job = request.job
        try:
            self._conn.send(request)
        except (BrokenPipeError, OSError):
            return self._died(job)
        deadline = time.monotonic() + timeout
        while True:
            try:
                has_message = self._conn.poll(tick_seconds)
                message = self._conn.recv() if has_message else None
            except (EOFError, OSError):
                return self._died(job)
            if isinstance(message, m.Progress) and message.job == job:
                on_progress(message.step, message.total)
            elif isinstance(message, m.Result | m.Cancelled | m.Failed) and message.job == job:
                return message
            elif message is None and not self._process.is_alive():
                return self._died(job)
            if time.monotonic() > deadline:
                log.error("engine job %s exceeded %.0f s; restarting the engine", job, timeout)
                self.stop(grace=0)
                return m.Failed(job, "generation_timeout",
                                f"The generation did not finish within {timeout:.0f} s.")
            tick()

    def new_job_id(self) -> int:
        self._next_job += 1
        return self._next_job

    def _died(self, job: int) -> m.Failed:
        code = self._process.exitcode if self._process else None
        self.stop(grace=0)
        return m.Failed(job, "service_error",
                        f"The engine process stopped unexpectedly (exit code {code}).",
                        retryable=True)

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
