"""A task's end: store its image and complete it, or cancel, requeue or fail it.

Every path first makes sure the task is still this worker's (its lease), and a result is
stored under its own attempt's key (`storage.result_key`), so a worker that lost its lease
can never write over, or delete, the result of the attempt that replaced it; it drops its
work and says so in the log.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import assert_never

from kreaserve import phases, task_queue
from kreaserve.config import Settings
from kreaserve.db import Database
from kreaserve.engine import messages as m
from kreaserve.moderation import ImageModerator
from kreaserve.storage import Storage, StorageError, result_key

log = logging.getLogger("kreaserve.worker")

#: A task whose engine process died is run again this many times (on a fresh child).
ENGINE_FAILURE_RETRIES = 1


@dataclass
class Running:
    """A claimed task whose job is with the engine."""

    claim: task_queue.Claim
    job: int
    deadline: float
    progress: int = 0
    saved: int = 0
    #: what the engine is doing (`kreaserve.phases`), and what the database last heard
    phase: str = phases.ENCODING
    saved_phase: str = phases.ENCODING
    renewed: float = field(default_factory=time.monotonic)
    cancel_sent: bool = False
    lost: bool = False


@dataclass(frozen=True)
class Outcome:
    """How a job ended, waiting to be recorded (it waits while the database is down)."""

    run: Running
    message: m.JobOutcome


class TaskFinisher:
    """Records the outcomes of one worker's jobs in the database and the storage."""

    def __init__(self, settings: Settings, db: Database, storage: Storage, worker_id: str) -> None:
        self.settings, self.db, self.storage, self.id = settings, db, storage, worker_id
        self._image_moderator: ImageModerator | None = None

    def record(self, outcome: Outcome, *, stopping: bool = False) -> None:
        """Record how a job ended; raises what the database raises (the caller retries)."""
        run, message = outcome.run, outcome.message
        if run.lost:
            log.warning(
                "task %s: lease lost; dropped its work and left the task to its new owner",
                run.claim.task_id,
            )
            return
        match message:
            case m.Result():
                self._complete(run.claim, message)
            case m.Cancelled():
                self._cancelled(run.claim, stopping)
            case m.Failed():
                self._failed(run.claim, message)
            case _:
                assert_never(message)

    def give_back(self, claim: task_queue.Claim) -> None:
        try:
            task_queue.requeue(self.db, claim.task_id, self.id)
        except Exception:  # noqa: BLE001 - the lease will hand it back anyway
            log.exception("could not requeue task %s", claim.task_id)

    def image_moderator(self) -> ImageModerator:
        if self._image_moderator is None:
            self._image_moderator = ImageModerator(self.settings.moderation_config())
        return self._image_moderator

    def _complete(self, claim: task_queue.Claim, result: m.Result) -> None:
        key = result_key(claim.task_id, claim.attempts, fmt=claim.output_format)
        # The lease check before the store also says what comes next (no extra write).
        phase = phases.CHECKING if claim.nsfw_check else phases.STORING
        lease = task_queue.renew(
            self.db, claim.task_id, self.id, self.settings.lease_seconds, phase=phase
        )
        if not lease.held:
            self._delete_own(claim, key)  # if an earlier try of this outcome stored it
            log.warning(
                "task %s: lease lost before its image was stored (another worker "
                "owns the task now); dropped its image",
                claim.task_id,
            )
            return
        if lease.cancel_requested:
            task_queue.end_cancelled(self.db, claim.task_id, self.id)
            return
        if claim.nsfw_check:  # strict mode: the image is classified before it is stored
            decision = self.image_moderator().check(result.image)
            if not decision.allowed:
                log.warning(
                    "task %s: image withheld (%s, score %.3f)",
                    claim.task_id,
                    decision.category,
                    decision.score,
                )
                task_queue.fail(
                    self.db, claim.task_id, self.id, "content_policy_violation", decision.message
                )
                return
        try:
            self.storage.put(key, result.image)
        except StorageError as exc:
            # Nothing was stored, so nothing is linked or charged: run it once more,
            # then fail it service_unavailable (credits released, callback sent).
            log.error("task %s: %s", claim.task_id, exc)
            self._failed(
                claim,
                m.Failed(
                    result.job,
                    "service_unavailable",
                    "The result store is unavailable; the image could not be saved.",
                    retryable=True,
                ),
            )
            return
        if task_queue.complete(
            self.db,
            claim.task_id,
            self.id,
            [key],
            self.settings.result_ttl_seconds,
            result.seconds,
            batch=claim.batch,
        ):
            log.info("task %s completed (%.2f s of engine time)", claim.task_id, result.seconds)
        else:
            self._delete_own(claim, key)
            log.warning(
                "task %s: lease lost while its image was stored; dropped its image", claim.task_id
            )

    def _delete_own(self, claim: task_queue.Claim, key: str) -> None:
        """Delete this attempt's own file (never another attempt's: the key is per attempt)."""
        try:
            self.storage.delete(key)
        except StorageError as exc:
            log.warning("task %s: could not delete the orphan result: %s", claim.task_id, exc)

    def _cancelled(self, claim: task_queue.Claim, stopping: bool) -> None:
        if (
            stopping
            and not task_queue.renew(
                self.db, claim.task_id, self.id, self.settings.lease_seconds
            ).cancel_requested
        ):
            # Shutting down, not a client cancel: hand the task to another worker.
            task_queue.requeue(self.db, claim.task_id, self.id)
            return
        task_queue.end_cancelled(self.db, claim.task_id, self.id)
        log.info("task %s cancelled", claim.task_id)

    def _failed(self, claim: task_queue.Claim, failure: m.Failed) -> None:
        if (
            failure.retryable
            and claim.attempts <= ENGINE_FAILURE_RETRIES
            and claim.attempts < self.settings.max_attempts
        ):
            log.warning("task %s: %s; putting it back in the queue", claim.task_id, failure.message)
            task_queue.requeue(self.db, claim.task_id, self.id)
            return
        log.error("task %s failed: %s", claim.task_id, failure.message)
        task_queue.fail(self.db, claim.task_id, self.id, failure.code, failure.message)
