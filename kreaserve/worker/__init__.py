"""The worker: claim tasks, run them in batches on an engine child, store the images, finish.

The same code runs inside `kreaserve serve` (embedded) and as `kreaserve worker` on a GPU
machine; both talk to the database only. `loop` is one worker around one engine,
`group` runs one per GPU, `setup` says what their engines load, `outage` is how the loop
rides out an unreachable database.
"""

from kreaserve.worker.group import WorkerGroup
from kreaserve.worker.loop import Worker
from kreaserve.worker.setup import engine_load, engine_options, gpu_slots, progress_percent

__all__ = [
    "Worker",
    "WorkerGroup",
    "engine_load",
    "engine_options",
    "gpu_slots",
    "progress_percent",
]
