"""The engine child's sending: a big result going out never stalls the next denoising."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time

import pytest

from kreaserve.engine import child
from kreaserve.engine import messages as m
from tests.unit.fake_engine import FakePipeline

#: Asserts wall-clock bounds: runs alone, after the parallel part of the suite.
pytestmark = pytest.mark.timing


def test_denoising_goes_on_while_a_result_waits_for_the_reader() -> None:
    """Batch 1's 3 MB result fills the pipe while the worker is busy (it reads nothing for
    1.5 s); batch 2's denoising steps, which send progress, must not wait for the reader."""
    ctx = mp.get_context("spawn")
    worker_end, child_end = ctx.Pipe(duplex=True)
    slots = ctx.Array("q", [-1] * child.CANCEL_SLOTS, lock=False)
    pipeline = FakePipeline(step_seconds=0.02, free_png=True)
    serving = threading.Thread(target=child.Child(child_end, slots, pipeline).serve, daemon=True)
    serving.start()
    for job in (1, 2):
        item = m.Item(job=job, prompt="a fox", seed=job)
        worker_end.send(m.GenerateBatch(items=(item,), width=1024, height=1024, steps=8))
    started = time.perf_counter()
    time.sleep(1.5)  # the worker stores something, reading nothing
    received: list[object] = []
    while not any(isinstance(msg, m.Result) and msg.job == 2 for msg in received):
        assert worker_end.poll(30), "the child stopped answering"
        received.append(worker_end.recv())
    worker_end.send(m.Shutdown())
    serving.join(30)
    assert len(pipeline.step_times) == 16
    second_batch_done = pipeline.step_times[-1] - started
    assert second_batch_done < 1.0, (
        f"batch 2 finished denoising {second_batch_done:.2f} s in: it waited for the reader"
    )
    results = [msg for msg in received if isinstance(msg, m.Result)]
    assert [r.job for r in results] == [1, 2] and len(results[0].image) == 1024 * 1024 * 3
