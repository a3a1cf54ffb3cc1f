"""Fakes that drive the worker loop in-process: a scripted engine and a database that can go
down. No torch, no child process: the worker loop's tests run in seconds."""

from __future__ import annotations

import io
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from types import SimpleNamespace

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from kreaserve.db import Database
from kreaserve.engine import messages as m
from kreaserve.engine.child import Child
from kreaserve.engine.options import EngineOptions
from kreaserve.engine.process import EngineDied, EngineProcess


class FakeEngine:
    """An engine that answers each batch from a thread: one Progress per step, one Denoised,
    then per job a Result (Cancelled when the worker cancelled it first).

    Knobs: `hang` (a batch never finishes), `start_error` (start raises it), `png` (the
    bytes of every result), and `hold_results()` (the worker, not the engine, freezes: the
    next Result it reads blocks it until `release_results()`, as a SIGSTOP would)."""

    def __init__(self, *, step_seconds: float = 0.02, png: bytes = b"\x89PNG fake") -> None:
        self.step_seconds = step_seconds
        self.png = png
        self.hang = False
        self.start_error: BaseException | None = None
        self.starts = 0
        self.stops = 0
        self.batches: list[m.GenerateBatch] = []
        self.cancelled: set[int] = set()
        self.sent_results: list[int] = []
        self._messages: queue.Queue[object] = queue.Queue()
        self._alive = False
        self._generation = 0  # bumped by stop: threads of a stopped engine send nothing
        self._next_job = 0
        self._released = threading.Event()
        self._released.set()
        self.holding = threading.Event()  # set while the worker is frozen on a Result

    # --- the engine protocol ------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._alive

    def start(self, timeout: float) -> m.Ready:
        self.starts += 1
        if self.start_error is not None:
            raise self.start_error
        self._alive = True
        return m.Ready(info={"device": "cpu", "weights": "fake"}, load_seconds=0.0)

    def new_job_id(self) -> int:
        self._next_job += 1
        return self._next_job

    def submit(self, batch: m.GenerateBatch) -> None:
        if not self._alive:
            raise EngineDied("The fake engine is not running.")
        self.batches.append(batch)
        threading.Thread(target=self._serve, args=(batch, self._generation), daemon=True).start()

    def cancel(self, job: int) -> None:
        self.cancelled.add(job)

    def next_message(self, timeout: float) -> object | None:
        if not self._alive:
            raise EngineDied("The fake engine stopped unexpectedly.")
        try:
            message = (
                self._messages.get(timeout=timeout) if timeout else self._messages.get_nowait()
            )
        except queue.Empty:
            if not self._alive:
                raise EngineDied("The fake engine stopped unexpectedly.") from None
            return None
        if isinstance(message, m.Result) and not self._released.is_set():
            self.holding.set()
            self._released.wait(60)
        return message

    def stop(self, grace: float = 10.0) -> None:
        self.stops += 1
        self._alive = False
        self._generation += 1
        self._messages = queue.Queue()

    # --- test controls ------------------------------------------------------------------

    def kill(self) -> None:
        """The child dies: its answers never come."""
        self._alive = False
        self._generation += 1

    def send(self, message: object) -> None:
        self._messages.put(message)

    def hold_results(self) -> None:
        self.holding.clear()
        self._released.clear()

    def release_results(self) -> None:
        self._released.set()

    def _serve(self, batch: m.GenerateBatch, generation: int) -> None:
        def live() -> bool:
            return generation == self._generation

        for step in range(1, batch.steps + 1):
            time.sleep(self.step_seconds)
            while self.hang and live() and not self.cancelled.issuperset(batch.jobs):
                time.sleep(0.05)
            if not live():
                return
            for item in batch.items:
                if item.job not in self.cancelled:
                    self._messages.put(m.Progress(item.job, step, batch.steps))
        self._messages.put(m.Denoised(tuple(batch.jobs)))
        for item in batch.items:
            if not live():
                return
            if item.job in self.cancelled:
                self._messages.put(m.Cancelled(item.job))
            else:
                self.sent_results.append(item.job)
                self._messages.put(m.Result(item.job, self.png, 0.01))


class FlakyDatabase(Database):
    """A database that fails every transaction, as an unreachable server does, while `down`
    is set; `failures` counts the transactions refused."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.down = threading.Event()
        self.failures = 0

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        if self.down.is_set():
            self.failures += 1
            raise OperationalError(
                "SELECT 1", {}, ConnectionRefusedError("connection refused (the test's outage)")
            )
        with super().transaction() as session:
            yield session

    def outage(self, seconds: float) -> None:
        """Go down now and come back after `seconds` (in the background)."""
        self.down.set()
        threading.Timer(seconds, self.down.clear).start()


def wait_for(check: Callable[[], object], timeout: float = 10.0, what: str = "") -> object:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.02)


class FakePipeline:
    """Stands in for `pipeline.Engine` inside the real engine `Child`: a denoising step is a
    sleep, a decode is an image of random noise at the request's size (a big PNG)."""

    def __init__(
        self, *, step_seconds: float = 0.01, overlap: str = "on", free_png: bool = False
    ) -> None:
        self.options = EngineOptions(overlap=overlap)
        self.info = {"device": "cpu", "weights": "fake"}
        self.step_seconds = step_seconds
        self.free_png = free_png
        self.step_times: list[float] = []

    def denoise(self, requests: list, on_step: Callable, is_cancelled: Callable) -> object:
        live = list(range(len(requests)))
        steps = requests[0].steps
        for step in range(1, steps + 1):
            time.sleep(self.step_seconds)
            live = [index for index in live if not is_cancelled(index)]
            if not live:
                return None
            for index in live:
                on_step(index, step, steps)
            self.step_times.append(time.perf_counter())
        return SimpleNamespace(live=live, requests=requests)

    def decode(self, denoised: SimpleNamespace, index: int) -> object:
        from PIL import Image

        request = denoised.requests[index]
        size = (request.width, request.height)
        noise = os.urandom(size[0] * size[1] * 3)
        if self.free_png:
            return _Encoded(noise)
        return Image.frombytes("RGB", size, noise)


class _Encoded:
    """A decoded image whose PNG encoding is free: it writes the bytes it holds."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def save(self, buffer: io.BytesIO, **_: object) -> None:
        buffer.write(self.data)


class _ThreadProcess:
    """Enough of a `multiprocessing.Process` for `EngineProcess`, running on a thread."""

    pid = None
    exitcode = None

    def __init__(self, target: Callable[[], None], conn: Connection) -> None:
        self._thread = threading.Thread(target=target, name="fake-engine-child", daemon=True)
        self._conn = conn
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def kill(self) -> None:
        """Shut the child's end of the pipe down, which wakes a thread blocked reading it."""
        try:
            with socket.socket(fileno=os.dup(self._conn.fileno())) as end:
                end.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class ThreadEngine(EngineProcess):
    """The real `EngineProcess` over a real pipe, its child a thread that runs `serve(conn)`
    (by default the real `Child` around a `FakePipeline`) instead of a spawned process."""

    def __init__(
        self,
        pipeline: FakePipeline | None = None,
        serve: Callable[[Connection], None] | None = None,
    ) -> None:
        super().__init__(m.Load(weights="fake", cache_dir=Path(".")))
        self.pipeline = pipeline or FakePipeline()
        self._serve = serve

    def _spawn(self, child_conn: Connection) -> _ThreadProcess:
        conn = Connection(os.dup(child_conn.fileno()))  # start() closes its own copy

        def run() -> None:
            try:
                if self._serve is not None:
                    self._serve(conn)
                    return
                conn.send(m.Ready(info=dict(self.pipeline.info)))
                Child(conn, self._cancel_slots, self.pipeline).serve()
            except (OSError, EOFError):
                pass  # killed: the pipe was shut under it
            finally:
                conn.close()

        return _ThreadProcess(run, conn)
