"""The engine child process: loads the pipeline once, then serves Generate messages.

Runs in a *spawned* process, so torch and diffusers are imported here only, never
in the worker or API process that starts it.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized

from kreaserve.engine import messages as m

log = logging.getLogger("kreaserve.engine")


def encode_png(image) -> bytes:  # type: ignore[no-untyped-def]
    """PNG bytes of a PIL image (fast compression: the noise of random weights is big)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


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


def main(conn: Connection, cancel_job: Synchronized, load: m.Load) -> None:
    """Entry point of the child: load, report Ready or LoadFailed, then loop."""
    exit_with_parent()
    # Ctrl-C in a terminal reaches the whole process group; the worker decides what
    # stops, and tells this process with a Shutdown message.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s engine %(levelname)s %(message)s")
    started = time.perf_counter()
    try:
        from kreaserve.engine.pipeline import Cancelled, Engine, GenerateRequest, WeightsError

        engine = Engine.load(load.weights, cache_dir=load.cache_dir, device=load.device,
                             dtype=load.dtype)
        if load.warmup:
            engine.warmup()
    except WeightsError as exc:
        conn.send(m.LoadFailed(str(exc)))
        return
    except Exception as exc:  # noqa: BLE001 - any load failure must reach the worker as text
        log.exception("engine failed to load")
        conn.send(m.LoadFailed(f"The engine could not start: {type(exc).__name__}: {exc}"))
        return
    conn.send(m.Ready(info=dict(engine.info), load_seconds=time.perf_counter() - started))

    while True:
        try:
            message = conn.recv()
        except EOFError:
            return  # the worker went away
        if isinstance(message, m.Shutdown):
            return
        if not isinstance(message, m.Generate):
            continue
        job = message.job
        began = time.perf_counter()
        try:
            request = GenerateRequest(prompt=message.prompt, width=message.width,
                                      height=message.height, seed=message.seed,
                                      steps=message.steps)
        except (TypeError, ValueError) as exc:
            conn.send(m.Failed(job, "invalid_parameters", f"Invalid generation request: {exc}"))
            continue
        try:
            image = engine.generate(
                request,
                on_step=lambda step, total, job=job: conn.send(m.Progress(job, step, total)),
                should_cancel=lambda job=job: cancel_job.value == job,
            )
            png = encode_png(image)
        except Cancelled:
            conn.send(m.Cancelled(job))
            continue
        except MemoryError as exc:
            conn.send(m.Failed(job, "resource_exhausted", f"Out of memory: {exc}", True))
            continue
        except Exception as exc:  # noqa: BLE001 - reported to the worker, which fails the task
            log.exception("generation failed")
            code = "resource_exhausted" if "out of memory" in str(exc).lower() else "service_error"
            conn.send(m.Failed(job, code, f"Generation failed: {type(exc).__name__}: {exc}"))
            continue
        conn.send(m.Result(job, png, time.perf_counter() - began))
