"""One worker: claims tasks, runs them in batches on its engine, stores the images, finishes.

The engine is kept busy: a batch is sent as soon as the previous one has finished denoising,
so the child decodes one batch while it denoises the next, and the worker stores results
while both happen.

What can go wrong, and what the worker does:
- the database is unreachable: the engine keeps running; renewals, claims and the recording
  of finished jobs are retried with a backoff (`outage`); finished jobs wait in memory, in
  order; if the outage outlasts the leases, the reaper hands the tasks to other workers
  and this one drops its work when it learns so;
- the lease is lost (another worker owns the task now): the job is cancelled, and whatever
  it produced is dropped (and logged), never written over the new owner's result;
- the engine dies or hangs: its jobs are retried or failed, and a fresh engine is started;
- one of the worker's threads dies (a bug): the worker is fatal, so the process exits
  non-zero for its supervisor instead of living on as a zombie that only heartbeats.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import assert_never

from kreaserve import contract, phases, task_queue
from kreaserve.config import Settings
from kreaserve.db import Database, pg_listen
from kreaserve.engine import messages as m
from kreaserve.engine.handle import EngineDied, EngineHandle, EngineStartError
from kreaserve.engine.process import EngineProcess
from kreaserve.states import WorkerState
from kreaserve.storage import Storage
from kreaserve.worker.finish import Outcome, Running, TaskFinisher
from kreaserve.worker.heartbeat import Heartbeat
from kreaserve.worker.outage import Backoff, brief, is_outage
from kreaserve.worker.setup import engine_load, idle_wait, progress_percent

log = logging.getLogger("kreaserve.worker")

#: How long the loop waits for the engine before it renews leases and looks for cancels.
TICK_SECONDS = 0.25
#: On stop, how long running jobs get to answer their cancel before they are abandoned.
STOP_GRACE_SECONDS = 20.0


class Worker:
    """Runs tasks from the queue until stopped; restarts its engine child when it dies."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        storage: Storage,
        *,
        on_fatal: Callable[[str], None] | None = None,
        engine: EngineHandle | None = None,
        visible_devices: str | None = None,
    ) -> None:
        self.settings, self.db, self.storage = settings, db, storage
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.engine: EngineHandle = engine or EngineProcess(engine_load(settings, visible_devices))
        self._on_fatal = on_fatal
        self.finisher = TaskFinisher(settings, db, storage, self.id)
        self._stop = threading.Event()
        self._idle = idle_wait(settings, db)
        self.heartbeat = Heartbeat(db, self.id, settings.weights)
        self._threads: list[threading.Thread] = []
        self._running: dict[int, Running] = {}
        self._denoising: set[int] = set()
        self._outcomes: deque[Outcome] = deque()
        self._database = Backoff()
        self.fatal_message: str | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker loop and its heartbeat in background threads."""
        self.heartbeat.beat()
        pg_listen.acquire(self._idle.remote, self)
        for target, name in (
            (self._run, "kreaserve-worker"),
            (lambda: self.heartbeat.run(self._stop), "kreaserve-heartbeat"),
        ):
            thread = threading.Thread(
                target=self._guarded, args=(target, name), name=name, daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop claiming, hand running tasks back to the queue, stop the child."""
        self.request_stop()  # the loop cancels its jobs and requeues them
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=STOP_GRACE_SECONDS + 10)
        self.engine.stop()
        pg_listen.release(self._idle.remote, self)
        self.heartbeat.state = WorkerState.STOPPED
        try:
            self.heartbeat.beat()
        except Exception:  # noqa: BLE001 - the database may already be gone at exit
            log.debug("final heartbeat failed", exc_info=True)

    def request_stop(self) -> None:
        self._stop.set()
        self._idle.wake()

    def _guarded(self, target: Callable[[], None], name: str) -> None:
        """Run a thread's body; if it dies, the whole worker is fatal (no zombie)."""
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - any death must reach the supervisor
            log.critical("worker thread %s died", name, exc_info=True)
            self._fatal(f"The worker thread {name} died: {type(exc).__name__}: {exc}")

    def _fatal(self, message: str) -> None:
        self.fatal_message = message
        self.heartbeat.state = WorkerState.FAILED
        self.heartbeat.info["message"] = message
        try:
            self.heartbeat.beat()
        except Exception:  # noqa: BLE001 - being fatal must not depend on the database
            log.warning("could not record the failed state", exc_info=True)
        self.request_stop()
        if self._on_fatal:
            self._on_fatal(message)

    # --- engine ---------------------------------------------------------------------------

    def _start_engine(self) -> bool:
        self.heartbeat.state = WorkerState.STARTING
        self.heartbeat.try_beat()
        try:
            ready = self.engine.start(self.settings.engine_start_timeout)
        except EngineStartError as exc:
            log.error("the engine cannot start: %s", exc)
            self._fatal(str(exc))
            return False
        info = ready.info
        device = str(info.get("device", "")) or None
        if device and info.get("visible_devices") is not None:
            device = f"{device} (CUDA_VISIBLE_DEVICES={info['visible_devices']})"
        self.heartbeat.info = {
            "weights": str(info.get("weights", self.settings.weights)),
            "device": device,
            "warning": info.get("warning"),
        }
        if info.get("warning"):
            log.warning("%s", info["warning"])
        log.info(
            "engine ready in %.1f s: weights %s (%s), %s on %s",
            ready.load_seconds,
            self.heartbeat.info["weights"],
            info.get("source") or info.get("kind", "?"),
            info.get("dtype", "?"),
            device or "?",
        )
        self.heartbeat.state = WorkerState.READY
        self.heartbeat.try_beat()
        return True

    # --- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        if not self._start_engine():
            return
        stopping_since: float | None = None
        while True:
            if self._stop.is_set():
                stopping_since = stopping_since or time.monotonic()
                idle = not self._running and not self._outcomes
                if idle or time.monotonic() - stopping_since > STOP_GRACE_SECONDS:
                    return
            elif not self._denoising and not self._outcomes and not self._submit_next():
                if not self._running:
                    self._idle.wait()
                    continue
            self._idle.reset()
            try:
                self._step()
            except EngineDied as exc:
                self._engine_died(str(exc))
            self._record_outcomes()
            if not self.engine.alive and not self._stop.is_set():
                log.warning("engine child is gone; starting a new one")
                if not self._start_engine():
                    return

    def _database_down(self, doing: str, exc: BaseException) -> None:
        """Note a failed database call (re-raising anything that is not an outage)."""
        if not is_outage(exc):
            raise exc
        delay = self._database.failed()
        log.warning(
            "database unreachable while %s (%s); the engine keeps running, next try in %.1f s",
            doing,
            brief(exc),
            delay,
        )

    def _submit_next(self) -> bool:
        """Claim a batch and send it to the engine; False when the queue is empty."""
        settings = self.settings
        if self._database.waiting:
            return False
        try:
            claims = task_queue.claim_batch(
                self.db, self.id, settings.lease_seconds, settings.batch_size
            )
            if (
                claims
                and len(claims) < settings.batch_size
                and claims[-1].attempts == 1
                and settings.batch_wait_ms > 0
            ):
                time.sleep(settings.batch_wait_ms / 1000)
                first = claims[0]
                claims += task_queue.claim_same_size(
                    self.db,
                    self.id,
                    settings.lease_seconds,
                    first.width,
                    first.height,
                    settings.batch_size - len(claims),
                )
        except Exception as exc:
            self._database_down("claiming tasks", exc)
            return False
        self._database.succeeded()
        if not claims:
            return False
        first = claims[0]
        deadline = time.monotonic() + settings.task_timeout_seconds
        items = []
        for claim in claims:
            job = self.engine.new_job_id()
            self._running[job] = Running(claim, job, deadline)
            items.append(
                m.Item(
                    job=job,
                    prompt=claim.prompt,
                    seed=claim.seed,
                    output_format=claim.output_format,
                    output_quality=claim.output_quality,
                )
            )
            log.info(
                "task %s: %dx%d seed %d (attempt %d, batch of %d)",
                claim.task_id,
                claim.width,
                claim.height,
                claim.seed,
                claim.attempts,
                len(claims),
            )
        batch = m.GenerateBatch(
            items=tuple(items), width=first.width, height=first.height, steps=contract.STEPS
        )
        self._denoising = set(batch.jobs)
        try:
            self.engine.submit(batch)
        except EngineDied as exc:  # it died while idle: the claims go back, a new one starts
            self._engine_died(str(exc))
        return True

    def _step(self) -> None:
        """Handle what the engine says (or wait a tick), then renew leases and check limits."""
        message = self.engine.next_message(TICK_SECONDS)
        while message is not None:
            self._handle(message)
            message = self.engine.next_message(0)
        now = time.monotonic()
        if self._stop.is_set():
            for run in self._running.values():
                self._cancel(run)
        self._renew_all(now)
        overdue = [run for run in self._running.values() if now > run.deadline]
        if overdue:
            self._timed_out(overdue)

    def _handle(self, message: m.EngineMessage) -> None:
        match message:
            case m.Denoised():
                self._denoising.difference_update(message.jobs)
            case m.Progress():
                run = self._running.get(message.job)
                if run is not None:
                    run.progress = progress_percent(message.step, message.total)
                    run.phase = phases.denoising(message.step, message.total)
            case m.Result() | m.Cancelled() | m.Failed():
                finished = self._running.pop(message.job, None)
                if finished is not None:
                    self._denoising.discard(finished.job)
                    self._outcomes.append(Outcome(finished, message))
            case _:
                assert_never(message)

    def _renew_all(self, now: float) -> None:
        """Renew the leases that are due (progress changed, or a third of the lease passed);
        a renewal also records the progress and phase, so the events stream costs no writes."""
        for run in list(self._running.values()):
            changed = run.progress != run.saved or run.phase != run.saved_phase
            if not (changed or now - run.renewed > self.settings.lease_seconds / 3):
                continue
            if self._database.waiting:
                return
            try:
                lease = task_queue.renew(
                    self.db,
                    run.claim.task_id,
                    self.id,
                    self.settings.lease_seconds,
                    run.progress if changed else None,
                    run.phase if changed else None,
                )
            except Exception as exc:
                self._database_down("renewing leases", exc)
                return
            self._database.succeeded()
            run.saved, run.saved_phase, run.renewed = run.progress, run.phase, now
            if not lease.held and not run.lost:
                run.lost = True
                log.warning(
                    "task %s: lease lost (another worker owns the task now); cancelling its job",
                    run.claim.task_id,
                )
            if lease.cancel_requested or not lease.held:
                self._cancel(run)

    def _cancel(self, run: Running) -> None:
        if not run.cancel_sent:
            run.cancel_sent = True
            self.engine.cancel(run.job)

    # --- failures of the engine ---------------------------------------------------------------

    def _engine_died(self, message: str) -> None:
        log.error("%s", message)
        runs = list(self._running.values())
        self._running.clear()
        self._denoising.clear()
        for run in runs:
            self._outcomes.append(
                Outcome(run, m.Failed(run.job, "service_error", message, retryable=True))
            )

    def _timed_out(self, overdue: list[Running]) -> None:
        timeout = self.settings.task_timeout_seconds
        log.error(
            "engine jobs %s exceeded %.0f s; restarting the engine",
            [run.job for run in overdue],
            timeout,
        )
        self.engine.stop(grace=0)
        for run in overdue:
            del self._running[run.job]
            self._outcomes.append(
                Outcome(
                    run,
                    m.Failed(
                        run.job,
                        "generation_timeout",
                        f"The generation did not finish within {timeout:.0f} s.",
                    ),
                )
            )
        # The others were queued behind the hung ones: the process, not they, failed.
        self._engine_died("The engine was restarted after a generation hung.")

    # --- one task's end -------------------------------------------------------------------

    def _record_outcomes(self) -> None:
        """Record finished jobs in order; one the database refuses waits for the next try."""
        while self._outcomes and not self._database.waiting:
            outcome = self._outcomes[0]
            try:
                self.finisher.record(outcome, stopping=self._stop.is_set())
            except Exception as exc:
                if is_outage(exc):
                    self._database_down(f"finishing task {outcome.run.claim.task_id}", exc)
                    return
                log.exception(
                    "task %s: recording its end failed; it goes back to the queue",
                    outcome.run.claim.task_id,
                )
                self.finisher.give_back(outcome.run.claim)
            else:
                self._database.succeeded()
            self._outcomes.popleft()
