"""The engine child process: loads the pipeline once, then serves GenerateBatch messages.

Runs in a *spawned* process, so torch and diffusers are imported here only, never in the
worker or API process that starts it. Two threads share the work so the device is not left
idle: the main thread encodes and denoises one batch while a finisher thread decodes the
previous batch's images and encodes their files (PNG, JPEG or WebP). A third thread does
all the sending, so a denoising step never waits while a multi-MB result squeezes through
the pipe (measured in BENCHMARKS.md, "engine child sending": a shared send lock cost up to
half the step time).

Every job of a batch gets exactly one answer (Result, Cancelled or Failed); the batch gets
one Denoised as soon as its denoising is over, which tells the worker to send the next one.
"""

from __future__ import annotations

import logging
import os
import queue
import resource
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, assert_never

from kreaserve import images
from kreaserve.engine import messages as m

log = logging.getLogger("kreaserve.engine")

#: Size of the shared cancel table: job j is cancelled when slot j % CANCEL_SLOTS holds j.
CANCEL_SLOTS = 1024


def exit_with_parent(poll_seconds: float = 1.0) -> None:
    """End this process when the worker that spawned it dies (even by SIGKILL), instead
    of computing an orphaned image on a GPU nobody reads from."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(poll_seconds)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def data_memory_mb() -> int:
    """This process's data memory (VmData, what RLIMIT_DATA caps) in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmData:"):
                return int(line.split()[1]) // 1024
    return 0


@dataclass
class _Batch:
    """A batch in the child: its message, when it started, and which jobs are answered."""

    message: m.GenerateBatch
    began: float = field(default_factory=time.perf_counter)
    answered: set[int] = field(default_factory=set)


class Child:
    """The child's serving loop around one loaded engine (see the module doc)."""

    def __init__(self, conn: Connection, cancel_slots: Any, engine: Any) -> None:
        self.conn = conn
        self.cancel_slots = cancel_slots
        self.engine = engine
        self._outbox: queue.SimpleQueue[m.EngineMessage | None] = queue.SimpleQueue()
        self._finishing: queue.Queue[tuple[_Batch, Any] | None] = queue.Queue(maxsize=1)
        self.overlap = engine.options.overlaps(engine.info["device"])

    def send(self, message: m.EngineMessage) -> None:
        """Queue a message for the sender thread; never blocks the caller."""
        self._outbox.put(message)

    def _send_loop(self) -> None:
        while (message := self._outbox.get()) is not None:
            try:
                self.conn.send(message)
            except OSError:
                return  # the worker went away; the main thread sees it too and exits

    def cancelled(self, job: int) -> bool:
        return self.cancel_slots[job % CANCEL_SLOTS] == job

    def answer(self, batch: _Batch, message: m.JobOutcome) -> None:
        if message.job not in batch.answered:
            batch.answered.add(message.job)
            self.send(message)

    def serve(self) -> None:
        finisher = threading.Thread(target=self._finish_loop, name="engine-finisher", daemon=True)
        sender = threading.Thread(target=self._send_loop, name="engine-sender", daemon=True)
        sender.start()
        if self.overlap:
            finisher.start()
        try:
            while True:
                try:
                    message: m.ToChild = self.conn.recv()
                except EOFError:
                    return  # the worker went away
                match message:
                    case m.Shutdown():
                        return
                    case m.GenerateBatch():
                        self._run_batch(message)
                    case _:
                        assert_never(message)  # the child dies; the worker restarts it
        finally:
            if self.overlap:
                self._finishing.put(None)
                finisher.join(timeout=60)
            self._outbox.put(None)  # what is queued still goes out first
            sender.join(timeout=60)

    def _run_batch(self, message: m.GenerateBatch) -> None:
        batch = _Batch(message)
        pieces = self._denoise(batch, message.items)
        # Sent before decoding, so the worker claims and sends the next batch now.
        self.send(m.Denoised(tuple(message.jobs)))
        for items, denoised in pieces:
            if self.overlap:
                self._finishing.put((batch, (items, denoised)))
            else:
                self._finish(batch, items, denoised)

    # --- denoising (main thread) ------------------------------------------------------------

    def _denoise(self, batch: _Batch, items: tuple[m.Item, ...]) -> list[tuple[Any, Any]]:
        """Denoise `items`; returns (items, Denoised) pieces to decode (several when an
        out-of-memory split the batch). Failures and cancels are answered here."""
        from kreaserve.engine import speedups
        from kreaserve.engine.request import GenerateRequest

        message = batch.message
        try:
            requests = [
                GenerateRequest(
                    prompt=i.prompt,
                    width=message.width,
                    height=message.height,
                    seed=i.seed,
                    steps=message.steps,
                )
                for i in items
            ]
        except (TypeError, ValueError) as exc:
            for item in items:
                self.answer(
                    batch,
                    m.Failed(item.job, "invalid_parameters", f"Invalid generation request: {exc}"),
                )
            return []

        def on_step(index: int, step: int, total: int) -> None:
            self.send(m.Progress(items[index].job, step, total))

        def is_cancelled(index: int) -> bool:
            job = items[index].job
            if self.cancelled(job):
                self.answer(batch, m.Cancelled(job))
                return True
            return job in batch.answered

        try:
            denoised = self.engine.denoise(requests, on_step=on_step, is_cancelled=is_cancelled)
        except Exception as exc:  # noqa: BLE001 - every failure is reported per job
            if speedups.is_out_of_memory(exc) and len(items) > 1:
                # A smaller batch may fit: run the items one by one (each image is the same
                # as in the batch, since every item has its own generator).
                log.warning(
                    "a batch of %d ran out of memory; running its images one by one", len(items)
                )
                speedups.free_memory(self.engine.info["device"])
                pieces = []
                for item in items:
                    if item.job not in batch.answered:
                        pieces += self._denoise(batch, (item,))
                return pieces
            self._fail_all(batch, items, exc)
            return []
        return [] if denoised is None else [(items, denoised)]

    def _fail_all(self, batch: _Batch, items: tuple[m.Item, ...], exc: BaseException) -> None:
        from kreaserve.engine import speedups

        if speedups.is_out_of_memory(exc):
            speedups.free_memory(self.engine.info["device"])
            code, text = "resource_exhausted", "Out of memory"
        else:
            log.error("generation failed", exc_info=exc)
            code, text = "service_error", "Generation failed"
        for item in items:
            self.answer(batch, m.Failed(item.job, code, f"{text}: {type(exc).__name__}: {exc}"))

    # --- decoding (finisher thread) -----------------------------------------------------------

    def _finish_loop(self) -> None:
        while (work := self._finishing.get()) is not None:
            batch, (items, denoised) = work
            self._finish(batch, items, denoised)
            del work, denoised  # free the latents before waiting for the next batch

    def _finish(self, batch: _Batch, items: tuple[m.Item, ...], denoised: Any) -> None:
        """Decode, encode (PNG, JPEG or WebP: Pillow's encoders release the GIL, so the
        denoising thread runs meanwhile; BENCHMARKS.md, "Output formats") and send each live
        image of a denoised batch."""
        for index in denoised.live:
            job = items[index].job
            if self.cancelled(job):
                self.answer(batch, m.Cancelled(job))
                continue
            if job in batch.answered:
                continue
            try:
                item = items[index]
                data = images.encode(
                    self.engine.decode(denoised, index), item.output_format, item.output_quality
                )
            except Exception as exc:  # noqa: BLE001 - reported for this job only
                self._fail_all(batch, (items[index],), exc)
                continue
            seconds = (time.perf_counter() - batch.began) / len(batch.message.items)
            self.answer(batch, m.Result(job, data, seconds))


def main(conn: Connection, cancel_slots: Any, load: m.Load) -> None:
    """Entry point of the child: load, report Ready or LoadFailed, then serve."""
    exit_with_parent()
    # Ctrl-C in a terminal reaches the whole process group; the worker decides what
    # stops, and tells this process with a Shutdown message.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from kreaserve import logs

    logs.setup(prefix="engine")  # the parent's KREASERVE_LOG_FORMAT and _LEVEL
    if load.visible_devices is not None:
        # One GPU per child: CUDA reads this once, when torch initialises it below.
        if "torch" in sys.modules:
            raise RuntimeError("torch was imported before CUDA_VISIBLE_DEVICES could be set")
        os.environ["CUDA_VISIBLE_DEVICES"] = load.visible_devices
    if not sys.stderr.isatty():
        # Loading bars redrawn with carriage returns are garbage in a log file; tqdm reads
        # this when it is imported, below.
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    started = time.perf_counter()
    try:
        from kreaserve.engine.pipeline import Engine, WeightsError

        engine = Engine.load(
            load.weights,
            cache_dir=load.cache_dir,
            device=load.device,
            dtype=load.dtype,
            options=load.options,
        )
        if load.warmup:
            engine.warmup(load.warmup_sizes, batch_size=load.warmup_batch_size)
    except WeightsError as exc:
        conn.send(m.LoadFailed(str(exc)))
        return
    except Exception as exc:  # noqa: BLE001 - any load failure must reach the worker as text
        log.exception("engine failed to load")
        conn.send(m.LoadFailed(f"The engine could not start: {type(exc).__name__}: {exc}"))
        return
    info = dict(
        engine.info,
        visible_devices=load.visible_devices,
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        memory_mb=data_memory_mb(),
    )
    if load.memory_limit_mb is not None:
        if info["memory_mb"] >= load.memory_limit_mb:
            conn.send(
                m.LoadFailed(
                    f"KREASERVE_ENGINE_MEMORY_LIMIT_MB={load.memory_limit_mb} is below what the "
                    f"loaded engine already uses ({info['memory_mb']} MiB); raise it."
                )
            )
            return
        limit = load.memory_limit_mb * 1024 * 1024
        resource.setrlimit(
            resource.RLIMIT_DATA, (limit, resource.getrlimit(resource.RLIMIT_DATA)[1])
        )
    conn.send(m.Ready(info=info, load_seconds=time.perf_counter() - started))
    Child(conn, cancel_slots, engine).serve()
