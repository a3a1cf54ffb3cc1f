"""The small messages between a worker and its engine child process (plain data only).

The protocol is closed: `ToChild` is everything the worker sends, `StartAnswer` what the
child answers to its `Load`, and `EngineMessage` what it sends while serving. Whoever
receives one dispatches with `match` over the union and `assert_never`, so a message type
added here and handled nowhere fails the type check, and an unknown object is an error."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kreaserve import images
from kreaserve.engine.options import EngineOptions


@dataclass(frozen=True)
class Load:
    """Worker → child, at spawn: which weights to load and where presets are cached."""

    weights: str
    cache_dir: Path
    device: str | None = None
    dtype: str | None = None
    warmup: bool = True
    options: EngineOptions = field(default_factory=EngineOptions)
    #: Sizes generated once at start (with `compile`, the sizes that will be served).
    warmup_sizes: tuple[tuple[int, int], ...] = ((256, 256),)
    #: Largest batch the worker will send; > 1 also warms the batched shapes.
    warmup_batch_size: int = 1
    #: CUDA_VISIBLE_DEVICES for the child (set before torch is imported): one GPU per child.
    visible_devices: str | None = None
    #: Cap on the child's data memory in MiB (RLIMIT_DATA), set after loading; None: no cap.
    memory_limit_mb: int | None = None


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
class Item:
    """One image of a batch, and how its file is encoded (`kreaserve.images.encode`)."""

    job: int
    prompt: str
    seed: int
    output_format: str = images.DEFAULT_FORMAT
    output_quality: int = images.DEFAULT_QUALITY


@dataclass(frozen=True)
class GenerateBatch:
    """Worker → child: make one image per item, all `width` x `height`, in one pipeline run.

    The child answers each job with exactly one Result, Cancelled or Failed, and the whole
    batch with one Denoised as soon as its denoising is over (before the decodes), the signal
    that the next batch can be sent."""

    items: tuple[Item, ...]
    width: int
    height: int
    steps: int = 8

    @property
    def jobs(self) -> list[int]:
        return [item.job for item in self.items]


@dataclass(frozen=True)
class Denoised:
    """Child → worker: the batch's denoising is over (what is left is decoding)."""

    jobs: tuple[int, ...]


@dataclass(frozen=True)
class Progress:
    """Child → worker: denoising step `step` of `total` is done."""

    job: int
    step: int
    total: int


@dataclass(frozen=True)
class Result:
    """Child → worker: the finished image, encoded in its item's `output_format`."""

    job: int
    image: bytes
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


#: Worker → child while serving.
ToChild = GenerateBatch | Shutdown
#: Child → worker once loading is over.
StartAnswer = Ready | LoadFailed
#: How one job of a batch ended (exactly one per job).
JobOutcome = Result | Cancelled | Failed
#: Child → worker while serving.
EngineMessage = Denoised | Progress | Result | Cancelled | Failed
