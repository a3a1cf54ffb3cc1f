"""The worker: claim a task, run it on the engine child, store the image, finish the task.

The same class runs inside `kreaserve serve` (embedded, one thread) and as
`kreaserve worker` on a GPU machine; both talk to the database only.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

from kreaserve import contract, queue
from kreaserve.config import Settings
from kreaserve.db import Database
from kreaserve.engine import messages as m
from kreaserve.engine.process import EngineProcess, EngineStartError
from kreaserve.moderation import ImageModerator
from kreaserve.storage import Storage

log = logging.getLogger("kreaserve.worker")

HEARTBEAT_SECONDS = 5.0


def progress_percent(step: int, total: int) -> int:
    """Denoising progress as the contract's 0-100; 100 is kept for 'completed'
    (after the last step the image is still being decoded and stored)."""
    return min(99, step * 100 // (total + 1))


class Worker:
    """Runs tasks from the queue until stopped; restarts its engine child when it dies."""

    def __init__(self, settings: Settings, db: Database, storage: Storage, *,
                 on_fatal: Callable[[str], None] | None = None,
                 engine: EngineProcess | None = None) -> None:
        self.settings, self.db, self.storage = settings, db, storage
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.engine = engine or EngineProcess(m.Load(
            weights=settings.weights, cache_dir=settings.weights_cache_dir,
            device=settings.device, dtype=settings.dtype,
        ))
        self._on_fatal = on_fatal
        self._image_moderator: ImageModerator | None = None
        self._stop = threading.Event()
        self._state = "starting"
        self._info: dict[str, str | None] = {}
        self._threads: list[threading.Thread] = []
        self.fatal_message: str | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker loop and its heartbeat in background threads."""
        self._heartbeat()
        for target, name in ((self._run, "kreaserve-worker"),
                             (self._heartbeat_loop, "kreaserve-heartbeat")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop claiming, let the current job be abandoned to the lease, stop the child."""
        self._stop.set()  # a running job sees this on its next tick and is handed back
        for thread in self._threads:
            thread.join(timeout=30)
        self.engine.stop()
        self._state = "stopped"
        try:
            self._heartbeat()
        except Exception:  # noqa: BLE001 - the database may already be gone at exit
            log.debug("final heartbeat failed", exc_info=True)

    def run_forever(self) -> int:
        """Run in the calling thread until stopped; the exit status for `kreaserve worker`."""
        self.start()
        try:
            while not self._stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()
        return 1 if self.fatal_message else 0

    # --- engine ---------------------------------------------------------------------------

    def _start_engine(self) -> bool:
        self._state = "starting"
        self._heartbeat()
        try:
            ready = self.engine.start(self.settings.engine_start_timeout)
        except EngineStartError as exc:
            self._fatal(str(exc))
            return False
        info = ready.info
        self._info = {"weights": str(info.get("weights", self.settings.weights)),
                      "device": str(info.get("device", "")) or None,
                      "warning": info.get("warning")}
        if info.get("warning"):
            log.warning("%s", info["warning"])
        log.info("engine ready in %.1f s: %s", ready.load_seconds, info)
        self._state = "ready"
        self._heartbeat()
        return True

    def _fatal(self, message: str) -> None:
        log.error("the engine cannot start: %s", message)
        self.fatal_message = message
        self._state = "failed"
        self._info["message"] = message
        self._heartbeat()
        self._stop.set()
        if self._on_fatal:
            self._on_fatal(message)

    # --- loops ----------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        queue.worker_heartbeat(
            self.db, self.id, socket.gethostname(), os.getpid(), self._state,
            weights=self._info.get("weights") or self.settings.weights,
            device=self._info.get("device"), warning=self._info.get("warning"),
            message=self._info.get("message"),
        )

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self._heartbeat()
            except Exception:  # noqa: BLE001 - a database hiccup must not kill the worker
                log.exception("worker heartbeat failed")

    def _run(self) -> None:
        if not self._start_engine():
            return
        while not self._stop.is_set():
            try:
                claim = queue.claim(self.db, self.id, self.settings.lease_seconds)
            except Exception:  # noqa: BLE001 - keep serving through database hiccups
                log.exception("claiming a task failed")
                self._stop.wait(1.0)
                continue
            if claim is None:
                self._stop.wait(self.settings.worker_poll_seconds)
                continue
            try:
                self._process(claim)
            except Exception:  # noqa: BLE001 - the lease returns the task if we cannot
                log.exception("task %s failed inside the worker", claim.task_id)
            if not self.engine.alive and not self._stop.is_set():
                log.warning("engine child is gone; starting a new one")
                if not self._start_engine():
                    return

    # --- one task -------------------------------------------------------------------------

    def _process(self, claim: queue.Claim) -> None:
        settings = self.settings
        job = self.engine.new_job_id()
        log.info("task %s: %dx%d seed %d (attempt %d)", claim.task_id, claim.width,
                 claim.height, claim.seed, claim.attempts)
        progress = {"value": 0, "saved": 0, "renewed": time.monotonic()}
        state = {"lost": False, "cancel": False}

        def renew(force: bool = False) -> None:
            if self._stop.is_set() and not state["cancel"]:
                state["cancel"] = True
                self.engine.cancel(job)
            now = time.monotonic()
            changed = progress["value"] != progress["saved"]
            if not (force or changed or now - progress["renewed"] > settings.lease_seconds / 3):
                return
            lease = queue.renew(self.db, claim.task_id, self.id, settings.lease_seconds,
                                progress["value"] if changed else None)
            progress["saved"], progress["renewed"] = progress["value"], now
            if not lease.held:
                state["lost"] = True
            if lease.cancel_requested or not lease.held:
                if not state["cancel"]:
                    state["cancel"] = True
                    self.engine.cancel(job)

        def on_progress(step: int, total: int) -> None:
            progress["value"] = progress_percent(step, total)
            renew()

        outcome = self.engine.run(
            m.Generate(job=job, prompt=claim.prompt, width=claim.width, height=claim.height,
                       seed=claim.seed, steps=contract.STEPS),
            on_progress=on_progress, tick=renew, timeout=settings.task_timeout_seconds,
        )
        if state["lost"]:
            log.warning("task %s: lease lost; leaving it to its new owner", claim.task_id)
            return
        if isinstance(outcome, m.Result):
            self._complete(claim, outcome)
        elif isinstance(outcome, m.Cancelled):
            if self._stop.is_set() and not queue.renew(
                self.db, claim.task_id, self.id, settings.lease_seconds
            ).cancel_requested:
                # Shutting down, not a client cancel: let the lease hand the task on.
                queue.requeue(self.db, claim.task_id, self.id)
                return
            queue.end_cancelled(self.db, claim.task_id, self.id)
            log.info("task %s cancelled", claim.task_id)
        else:
            self._failed(claim, outcome)

    def image_moderator(self) -> ImageModerator:
        if self._image_moderator is None:
            self._image_moderator = ImageModerator(self.settings.moderation_config())
        return self._image_moderator

    def _complete(self, claim: queue.Claim, result: m.Result) -> None:
        lease = queue.renew(self.db, claim.task_id, self.id, self.settings.lease_seconds)
        if lease.cancel_requested:
            queue.end_cancelled(self.db, claim.task_id, self.id)
            return
        if claim.nsfw_check:  # strict mode: the image is classified before it is stored
            decision = self.image_moderator().check(result.png)
            if not decision.allowed:
                log.warning("task %s: image withheld (%s, score %.3f)", claim.task_id,
                            decision.category, decision.score)
                queue.fail(self.db, claim.task_id, self.id, "content_policy_violation",
                           decision.message)
                return
        key = f"{claim.task_id}/0.png"
        self.storage.put(key, result.png)
        if queue.complete(self.db, claim.task_id, self.id, [key],
                          self.settings.result_ttl_seconds, result.seconds):
            log.info("task %s completed in %.2f s", claim.task_id, result.seconds)
        else:
            self.storage.delete(key)  # no longer ours: do not leave an orphan file

    def _failed(self, claim: queue.Claim, failure: m.Failed) -> None:
        if failure.retryable and claim.attempts < self.settings.max_attempts:
            log.warning("task %s: %s; putting it back in the queue", claim.task_id,
                        failure.message)
            queue.requeue(self.db, claim.task_id, self.id)
            return
        log.error("task %s failed: %s", claim.task_id, failure.message)
        queue.fail(self.db, claim.task_id, self.id, failure.code, failure.message)
