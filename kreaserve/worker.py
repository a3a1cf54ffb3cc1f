"""The worker: claim tasks, run them in batches on an engine child, store the images, finish.

The same class runs inside `kreaserve serve` (embedded) and as `kreaserve worker` on a GPU
machine; both talk to the database only. `WorkerGroup` runs one `Worker` (one engine child)
per GPU.

The engine is kept busy: a batch is sent as soon as the previous one has finished denoising,
so the child decodes one batch while it denoises the next, and the worker stores results
while both happen.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from kreaserve import contract, queue
from kreaserve.config import Settings
from kreaserve.db import Database
from kreaserve.engine import messages as m
from kreaserve.engine.options import EngineOptions
from kreaserve.engine.process import EngineDied, EngineProcess, EngineStartError
from kreaserve.moderation import ImageModerator
from kreaserve.storage import Storage, StorageError, result_key

log = logging.getLogger("kreaserve.worker")

HEARTBEAT_SECONDS = 5.0
#: How long the loop waits for the engine before it renews leases and looks for cancels.
TICK_SECONDS = 0.25
#: A task whose engine process died is run again this many times (on a fresh child).
ENGINE_FAILURE_RETRIES = 1
#: On stop, how long running jobs get to answer their cancel before they are abandoned.
STOP_GRACE_SECONDS = 20.0


def progress_percent(step: int, total: int) -> int:
    """Denoising progress as the contract's 0-100; 100 is kept for 'completed'
    (after the last step the image is still being decoded and stored)."""
    return min(99, step * 100 // (total + 1))


def engine_options(settings: Settings) -> EngineOptions:
    """The engine's speed-up switches from the settings, as the engine child takes them."""
    return EngineOptions(trim_padding=settings.trim_padding,
                         attention_backend=settings.attention_backend or None,
                         compile=settings.compile, cuda_graphs=settings.cuda_graphs,
                         fp8=settings.fp8, vae_tiling=settings.vae_tiling,
                         overlap=settings.overlap_decode)


def engine_load(settings: Settings, visible_devices: str | None = None) -> m.Load:
    """What an engine child loads and warms up before the worker claims anything.

    With `compile`, the warm-up runs every size the contract serves and, when tasks are
    batched, the batched shapes too, so no task waits for a compilation.
    """
    compiling = settings.compile
    sizes = tuple(sorted(set(contract.PIXELS.values()))) if compiling else ((256, 256),)
    return m.Load(
        weights=settings.weights, cache_dir=settings.weights_cache_dir,
        device=settings.device, dtype=settings.dtype, options=engine_options(settings),
        warmup_sizes=sizes, warmup_batch_size=settings.batch_size if compiling else 1,
        visible_devices=visible_devices, memory_limit_mb=settings.engine_memory_limit_mb,
    )


def gpu_slots(setting: str) -> list[str | None]:
    """What each engine child gets as CUDA_VISIBLE_DEVICES, from KREASERVE_ENGINE_GPUS.

    "none": one engine, environment untouched. "auto": one per GPU of CUDA_VISIBLE_DEVICES
    when it is set, else one per GPU `nvidia-smi -L` lists, else one engine (CPU). Otherwise
    a comma-separated list of GPU indexes or UUIDs.
    """
    value = setting.strip().lower()
    if value == "none":
        return [None]
    if value != "auto":
        slots = [part.strip() for part in setting.split(",") if part.strip()]
        if not slots:
            raise ValueError("KREASERVE_ENGINE_GPUS is empty; use auto, none or a list like 0,1")
        return list(slots)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        slots = [part.strip() for part in visible.split(",") if part.strip()]
        return list(slots) if len(slots) > 1 else [None]
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi is None:
        return [None]
    try:
        listing = subprocess.run([nvidia_smi, "-L"], capture_output=True, text=True,
                                 timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return [None]
    count = sum(1 for line in listing.splitlines() if line.startswith("GPU "))
    return [str(index) for index in range(count)] if count > 1 else [None]


@dataclass
class Running:
    """A claimed task whose job is with the engine."""

    claim: queue.Claim
    job: int
    deadline: float
    progress: int = 0
    saved: int = 0
    renewed: float = field(default_factory=time.monotonic)
    cancel_sent: bool = False
    lost: bool = False


class Worker:
    """Runs tasks from the queue until stopped; restarts its engine child when it dies."""

    def __init__(self, settings: Settings, db: Database, storage: Storage, *,
                 on_fatal: Callable[[str], None] | None = None,
                 engine: EngineProcess | None = None,
                 visible_devices: str | None = None) -> None:
        self.settings, self.db, self.storage = settings, db, storage
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.engine = engine or EngineProcess(engine_load(settings, visible_devices))
        self._on_fatal = on_fatal
        self._image_moderator: ImageModerator | None = None
        self._stop = threading.Event()
        self._state = "starting"
        self._info: dict[str, str | None] = {}
        self._threads: list[threading.Thread] = []
        self._running: dict[int, Running] = {}
        self._denoising: set[int] = set()
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
        """Stop claiming, hand running tasks back to the queue, stop the child."""
        self._stop.set()  # the loop cancels its jobs and requeues them
        for thread in self._threads:
            thread.join(timeout=STOP_GRACE_SECONDS + 10)
        self.engine.stop()
        self._state = "stopped"
        try:
            self._heartbeat()
        except Exception:  # noqa: BLE001 - the database may already be gone at exit
            log.debug("final heartbeat failed", exc_info=True)

    def request_stop(self) -> None:
        self._stop.set()

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
        device = str(info.get("device", "")) or None
        if device and info.get("visible_devices") is not None:
            device = f"{device} (CUDA_VISIBLE_DEVICES={info['visible_devices']})"
        self._info = {"weights": str(info.get("weights", self.settings.weights)),
                      "device": device, "warning": info.get("warning")}
        if info.get("warning"):
            log.warning("%s", info["warning"])
        log.info("engine ready in %.1f s: weights %s (%s), %s on %s", ready.load_seconds,
                 self._info["weights"], info.get("source") or info.get("kind", "?"),
                 info.get("dtype", "?"), device or "?")
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
        stopping_since: float | None = None
        while True:
            if self._stop.is_set():
                stopping_since = stopping_since or time.monotonic()
                if not self._running or time.monotonic() - stopping_since > STOP_GRACE_SECONDS:
                    return
            elif not self._denoising and not self._submit_next():
                if not self._running:
                    self._stop.wait(self.settings.worker_poll_seconds)
                    continue
            try:
                self._step()
            except EngineDied as exc:
                self._engine_died(str(exc))
            except Exception:  # noqa: BLE001 - the leases return the tasks if we cannot
                log.exception("the worker loop failed; its tasks go back to the queue")
                self._abandon_all()
            if not self.engine.alive and not self._stop.is_set():
                log.warning("engine child is gone; starting a new one")
                if not self._start_engine():
                    return

    def _submit_next(self) -> bool:
        """Claim a batch and send it to the engine; False when the queue is empty."""
        settings = self.settings
        try:
            claims = queue.claim_batch(self.db, self.id, settings.lease_seconds,
                                       settings.batch_size)
            if claims and len(claims) < settings.batch_size and claims[-1].attempts == 1 \
                    and settings.batch_wait_ms > 0:
                time.sleep(settings.batch_wait_ms / 1000)
                first = claims[0]
                claims += queue.claim_same_size(self.db, self.id, settings.lease_seconds,
                                                first.width, first.height,
                                                settings.batch_size - len(claims))
        except Exception:  # noqa: BLE001 - keep serving through database hiccups
            log.exception("claiming tasks failed")
            self._stop.wait(1.0)
            return False
        if not claims:
            return False
        first = claims[0]
        deadline = time.monotonic() + settings.task_timeout_seconds
        items = []
        for claim in claims:
            job = self.engine.new_job_id()
            self._running[job] = Running(claim, job, deadline)
            items.append(m.Item(job=job, prompt=claim.prompt, seed=claim.seed))
            log.info("task %s: %dx%d seed %d (attempt %d, batch of %d)", claim.task_id,
                     claim.width, claim.height, claim.seed, claim.attempts, len(claims))
        batch = m.GenerateBatch(items=tuple(items), width=first.width, height=first.height,
                                steps=contract.STEPS)
        self._denoising = set(batch.jobs)
        self.engine.submit(batch)
        return True

    def _step(self) -> None:
        """Handle what the engine says (or wait a tick), then renew leases and check limits."""
        message = self.engine.next_message(TICK_SECONDS)
        while message is not None:
            self._handle(message)
            message = self.engine.next_message(0)
        now = time.monotonic()
        for run in list(self._running.values()):
            self._renew(run, now)
        overdue = [run for run in self._running.values() if now > run.deadline]
        if overdue:
            self._timed_out(overdue)

    def _handle(self, message: object) -> None:
        if isinstance(message, m.Denoised):
            self._denoising.difference_update(message.jobs)
            return
        job = getattr(message, "job", None)
        run = self._running.get(job) if isinstance(job, int) else None
        if run is None:
            return
        if isinstance(message, m.Progress):
            run.progress = progress_percent(message.step, message.total)
            return
        del self._running[run.job]
        self._denoising.discard(run.job)
        if run.lost:
            log.warning("task %s: lease lost; leaving it to its new owner", run.claim.task_id)
        elif isinstance(message, m.Result):
            self._complete(run.claim, message)
        elif isinstance(message, m.Cancelled):
            self._cancelled(run.claim)
        elif isinstance(message, m.Failed):
            self._failed(run.claim, message)

    def _renew(self, run: Running, now: float) -> None:
        if self._stop.is_set():
            self._cancel(run)
        changed = run.progress != run.saved
        if not (changed or now - run.renewed > self.settings.lease_seconds / 3):
            return
        lease = queue.renew(self.db, run.claim.task_id, self.id, self.settings.lease_seconds,
                            run.progress if changed else None)
        run.saved, run.renewed = run.progress, now
        if not lease.held:
            run.lost = True
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
            if not run.lost:
                self._failed(run.claim, m.Failed(run.job, "service_error", message,
                                                 retryable=True))

    def _timed_out(self, overdue: list[Running]) -> None:
        timeout = self.settings.task_timeout_seconds
        log.error("engine jobs %s exceeded %.0f s; restarting the engine",
                  [run.job for run in overdue], timeout)
        self.engine.stop(grace=0)
        for run in overdue:
            del self._running[run.job]
            queue.fail(self.db, run.claim.task_id, self.id, "generation_timeout",
                       f"The generation did not finish within {timeout:.0f} s.")
        # The others were queued behind the hung ones: the process, not they, failed.
        self._engine_died("The engine was restarted after a generation hung.")

    def _abandon_all(self) -> None:
        self.engine.stop(grace=0)
        runs = list(self._running.values())
        self._running.clear()
        self._denoising.clear()
        for run in runs:
            try:
                queue.requeue(self.db, run.claim.task_id, self.id)
            except Exception:  # noqa: BLE001 - the lease will hand it back anyway
                log.exception("could not requeue task %s", run.claim.task_id)

    # --- one task's end -------------------------------------------------------------------

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
        key = result_key(claim.task_id, claim.attempts)
        try:
            self.storage.put(key, result.png)
        except StorageError as exc:
            # Nothing was stored, so nothing is linked or charged: run it once more,
            # then fail it service_unavailable (credits released, callback sent).
            log.error("task %s: %s", claim.task_id, exc)
            self._failed(claim, m.Failed(result.job, "service_unavailable",
                                         "The result store is unavailable; the image "
                                         "could not be saved.", retryable=True))
            return
        if queue.complete(self.db, claim.task_id, self.id, [key],
                          self.settings.result_ttl_seconds, result.seconds, batch=claim.batch):
            log.info("task %s completed (%.2f s of engine time)", claim.task_id, result.seconds)
        else:
            try:
                self.storage.delete(key)  # no longer ours: do not leave an orphan file
            except StorageError as exc:
                log.warning("task %s: could not delete the orphan result: %s",
                            claim.task_id, exc)

    def _cancelled(self, claim: queue.Claim) -> None:
        if self._stop.is_set() and not queue.renew(
            self.db, claim.task_id, self.id, self.settings.lease_seconds
        ).cancel_requested:
            # Shutting down, not a client cancel: hand the task to another worker.
            queue.requeue(self.db, claim.task_id, self.id)
            return
        queue.end_cancelled(self.db, claim.task_id, self.id)
        log.info("task %s cancelled", claim.task_id)

    def _failed(self, claim: queue.Claim, failure: m.Failed) -> None:
        if failure.retryable and claim.attempts <= ENGINE_FAILURE_RETRIES \
                and claim.attempts < self.settings.max_attempts:
            log.warning("task %s: %s; putting it back in the queue", claim.task_id,
                        failure.message)
            queue.requeue(self.db, claim.task_id, self.id)
            return
        log.error("task %s failed: %s", claim.task_id, failure.message)
        queue.fail(self.db, claim.task_id, self.id, failure.code, failure.message)


class WorkerGroup:
    """One `Worker` per GPU slot (see `gpu_slots`), started and stopped together.

    Behaves like a single worker: when one engine cannot start, the group is fatal."""

    def __init__(self, settings: Settings, db: Database, storage: Storage, *,
                 on_fatal: Callable[[str], None] | None = None) -> None:
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
