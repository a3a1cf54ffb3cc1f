"""How long the engine child's denoising waits on sending, while big results go out.

The real `engine.child.Child` serves batches over a real pipe, on a thread, around a fake
pipeline: a denoising step is a sleep of `--step-ms` (the device's time), a decode is a
`--side`-pixel square of noise (12.6 MB at 2048, what a noise PNG weighs; encoded for free
so that the sending, not the CPU's PNG encoder, is measured). The reader plays the worker: it reads
everything, and for each Result it spends `--store-ms` storing (file, fsync, database)
before it reads again, sending the next batch as soon as a batch is denoised, as the worker
does. With overlap on, batch n+1 denoises while batch n's results are sent.

Printed: the time the denoising lost per batch (wall time of its steps minus the steps'
own time), the worst single step, and the wall time of the whole run.

    .venv/bin/python bench/child_send.py [--batches 6 --batch 2 --side 2048]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import threading
import time
from types import SimpleNamespace
from typing import Any

from kreaserve.engine import child
from kreaserve.engine import messages as m
from kreaserve.engine.options import EngineOptions


class FakePipeline:
    """Denoising steps are sleeps; decodes are noise images of the request's size."""

    def __init__(self, step_seconds: float) -> None:
        self.options = EngineOptions(overlap="on")
        self.info = {"device": "cpu"}
        self.step_seconds = step_seconds
        self.batches: list[list[float]] = []  # per batch: the end time of each step

    def denoise(self, requests: list[Any], on_step: Any, is_cancelled: Any) -> Any:
        steps = requests[0].steps
        times = [time.perf_counter()]
        for step in range(1, steps + 1):
            time.sleep(self.step_seconds)
            for index in range(len(requests)):
                on_step(index, step, steps)
            times.append(time.perf_counter())
        self.batches.append(times)
        return SimpleNamespace(live=list(range(len(requests))), requests=requests)

    def decode(self, denoised: Any, index: int) -> Any:
        request = denoised.requests[index]
        return _Encoded(os.urandom(request.width * request.height * 3))


class _Encoded:
    """A decoded image whose PNG encoding costs nothing: it writes bytes of a noise PNG's
    size, so the run measures the sending, not the CPU's PNG encoder."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def save(self, buffer: Any, **_: Any) -> None:
        buffer.write(self.data)


def run(batches: int, batch: int, side: int, step_seconds: float, store_seconds: float) -> None:
    ctx = mp.get_context("spawn")
    worker_end, child_end = ctx.Pipe(duplex=True)
    slots = ctx.Array("q", [-1] * child.CANCEL_SLOTS, lock=False)
    pipeline = FakePipeline(step_seconds)
    serving = threading.Thread(
        target=child.Child(child_end, slots, pipeline).serve, name="engine-child", daemon=True
    )
    serving.start()
    job = 0

    def submit() -> None:
        nonlocal job
        items = []
        for _ in range(batch):
            job += 1
            items.append(m.Item(job=job, prompt="a fox", seed=job))
        worker_end.send(m.GenerateBatch(items=tuple(items), width=side, height=side, steps=8))

    started = time.perf_counter()
    submit()
    sent, results, size = 1, 0, 0
    while results < batches * batch:
        message = worker_end.recv()
        if isinstance(message, m.Denoised) and sent < batches:
            submit()
            sent += 1
        elif isinstance(message, m.Result):
            results += 1
            size = len(message.image)
            time.sleep(store_seconds)
    wall = time.perf_counter() - started
    worker_end.send(m.Shutdown())
    serving.join(30)
    own = 8 * step_seconds
    lost = [times[-1] - times[0] - own for times in pipeline.batches]
    worst = max(b - a for times in pipeline.batches for a, b in zip(times, times[1:], strict=False))
    print(
        f"{batches} batches of {batch} at {side}x{side} (PNG {size / 1e6:.1f} MB), "
        f"step {step_seconds * 1000:.0f} ms, store {store_seconds * 1000:.0f} ms"
    )
    print("  denoising lost per batch (s): " + " ".join(f"{x:.3f}" for x in lost))
    print(
        f"  mean lost after the first batch: {sum(lost[1:]) / max(1, len(lost) - 1):.3f} s"
        f" of {own:.2f} s of steps; worst step {worst:.3f} s; wall {wall:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--side", type=int, default=2048)
    parser.add_argument("--step-ms", type=float, default=100.0)
    parser.add_argument("--store-ms", type=float, default=300.0)
    args = parser.parse_args()
    run(args.batches, args.batch, args.side, args.step_ms / 1000, args.store_ms / 1000)


if __name__ == "__main__":
    main()
