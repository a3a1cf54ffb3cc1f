"""The small messages between a worker and its engine child process (plain data only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Load:
    """Worker → child, at spawn: which weights to load and where presets are cached."""

    weights: str
    cache_dir: Path
    device: str | None = None
    dtype: str | None = None
    warmup: bool = True


@dataclass(frozen=True)
class Ready:
    """Child → worker: weights loaded and warmed up."""

    info: dict[str, Any] = field(default_factory=dict)
    load_seconds: float = 0.0


@dataclass(frozen=True)
class LoadFailed:
    """Child → worker: the weights could not be loaded; `message` says what to do."""

    message: str


@dataclass(frozen=True)
class Generate:
    """Worker → child: make one image."""

    job: int
    prompt: str
    width: int
    height: int
    seed: int
    steps: int = 8


@dataclass(frozen=True)
class Progress:
    """Child → worker: denoising step `step` of `total` is done."""

    job: int
    step: int
    total: int


@dataclass(frozen=True)
class Result:
    """Child → worker: the finished image, PNG-encoded."""

    job: int
    png: bytes
    seconds: float


@dataclass(frozen=True)
class Cancelled:
    """Child → worker: the job stopped before its next step, without decoding."""

    job: int


@dataclass(frozen=True)
class Failed:
    """Child → worker (or the worker itself, when the child died): the job failed.

    `code` is a task error code; `retryable` is True when the process, not the input,
    was at fault."""

    job: int
    code: str
    message: str
    retryable: bool = False


@dataclass(frozen=True)
class Shutdown:
    """Worker → child: exit cleanly."""
