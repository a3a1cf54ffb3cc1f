"""What a worker's engines are: their load message from the settings, and one per GPU."""

from __future__ import annotations

import os
import shutil
import subprocess

from kreaserve import contract, wakeups
from kreaserve.config import Settings
from kreaserve.db import Database, pg_listen
from kreaserve.engine import messages as m
from kreaserve.engine.options import EngineOptions


def engine_options(settings: Settings) -> EngineOptions:
    """The engine's speed-up switches from the settings, as the engine child takes them."""
    return EngineOptions(
        trim_padding=settings.trim_padding,
        attention_backend=settings.attention_backend or None,
        compile=settings.compile,
        cuda_graphs=settings.cuda_graphs,
        fp8=settings.fp8,
        vae_tiling=settings.vae_tiling,
        overlap=settings.overlap_decode,
    )


def engine_load(settings: Settings, visible_devices: str | None = None) -> m.Load:
    """What an engine child loads and warms up before the worker claims anything.

    With `compile`, the warm-up runs every size the contract serves and, when tasks are
    batched, the batched shapes too, so no task waits for a compilation.
    """
    compiling = settings.compile
    sizes = tuple(sorted(set(contract.PIXELS.values()))) if compiling else ((256, 256),)
    return m.Load(
        weights=settings.weights,
        cache_dir=settings.weights_cache_dir,
        device=settings.device,
        dtype=settings.dtype,
        options=engine_options(settings),
        warmup_sizes=sizes,
        warmup_batch_size=settings.batch_size if compiling else 1,
        visible_devices=visible_devices,
        memory_limit_mb=settings.engine_memory_limit_mb,
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
        listing = subprocess.run(
            [nvidia_smi, "-L"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return [None]
    count = sum(1 for line in listing.splitlines() if line.startswith("GPU "))
    return [str(index) for index in range(count)] if count > 1 else [None]


def progress_percent(step: int, total: int) -> int:
    """Denoising progress as the contract's 0-100; 100 is kept for 'completed'
    (after the last step the image is still being decoded and stored)."""
    return min(99, step * 100 // (total + 1))


def idle_wait(settings: Settings, db: Database) -> wakeups.Idle:
    """The idle poll's wait. On PostgreSQL, tasks created by other processes wake it
    through LISTEN (`kreaserve.db.pg_listen`), and its ceiling applies only while that
    connection is up."""
    base, ceiling = settings.worker_poll_seconds, settings.worker_idle_poll_max_seconds
    return wakeups.Idle(wakeups.TASKS, base, ceiling, remote=pg_listen.source(db))
