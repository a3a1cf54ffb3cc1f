"""The engine's and worker's knobs (weights, devices, leases, batching, speed-ups), a part of
`config.Settings` kept apart because only the worker and its engine read them."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class EngineSettings(BaseSettings):
    """The engine and worker's settings; each field is also the env var KREASERVE_<FIELD>."""

    model_config = SettingsConfigDict(env_prefix="KREASERVE_", extra="ignore")

    weights: str = Field(
        default="auto",
        description="krea/Krea-2-Turbo (a Hugging Face id), a local directory, tiny-random, "
        "or auto (the real model on a CUDA GPU, else tiny-random with a warning).",
    )
    device: str | None = Field(default=None, description="torch device; default cuda if present.")
    dtype: str | None = Field(default=None, description="bfloat16 (default) or float32.")
    embedded_worker: bool = Field(
        default=True, description="`serve` also runs a worker in the same process."
    )
    worker_poll_seconds: float = Field(default=0.2, gt=0, description="Idle queue poll interval.")
    worker_idle_poll_max_seconds: float = Field(
        default=1.0,
        gt=0,
        description="Ceiling of the idle poll interval, which doubles after each empty poll; "
        "new work wakes the loop at once (in the same process, and on PostgreSQL from other "
        "processes through LISTEN/NOTIFY, without which the poll keeps its base interval).",
    )
    lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A claimed task returns to the queue this long after "
        "its worker stops renewing the claim (a crashed worker loses nothing).",
    )
    max_attempts: int = Field(
        default=3, ge=1, description="A task whose worker died this many times ends failed."
    )
    engine_start_timeout: float = Field(
        default=900.0, gt=0, description="Seconds allowed for loading weights and warm-up."
    )
    task_timeout_seconds: float = Field(
        default=600.0, gt=0, description="A generation running longer ends generation_timeout."
    )
    engine_gpus: str = Field(
        default="auto",
        description="GPUs a worker runs engines on, one engine child per GPU: "
        "auto (each GPU in CUDA_VISIBLE_DEVICES, else each one nvidia-smi lists, else one "
        "engine), a comma-separated list of GPU indexes such as 0,1,2,3, or none (one engine, "
        "environment untouched).",
    )
    engine_memory_limit_mb: int | None = Field(
        default=None,
        gt=0,
        description="Cap on an engine child's host memory (RLIMIT_DATA, "
        "MiB), applied once it has loaded: a generation past it fails resource_exhausted "
        "instead of waking the kernel's OOM killer.",
    )
    batch_size: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Most pending tasks of one pixel size a worker "
        "claims at once and runs as one pipeline call (see BENCHMARKS.md).",
    )
    batch_wait_ms: float = Field(
        default=5.0,
        ge=0,
        le=1000,
        description="How long a worker that claimed fewer than "
        "batch_size tasks waits for more of the same size before it starts.",
    )
    trim_padding: bool = Field(
        default=True,
        description="Cut the text conditioning to the real prompt length "
        "(equal to the padded pipeline up to float rounding; see BENCHMARKS.md).",
    )
    attention_backend: str | None = Field(
        default=None,
        description="diffusers attention backend for the transformer (flash, "
        "_native_cudnn, flash_varlen, ...); default PyTorch SDPA.",
    )
    compile: bool = Field(
        default=False,
        description="Compile the repeated transformer blocks (torch.compile, "
        "regional); the warm-up then compiles for the served sizes.",
    )
    cuda_graphs: bool = Field(
        default=False,
        description="With compile on CUDA, capture CUDA graphs (reduce-overhead mode).",
    )
    fp8: bool = Field(
        default=False,
        description="FP8 weights and activations for the transformer (torchao; "
        "CUDA compute capability 8.9+, e.g. H100).",
    )
    vae_tiling: str = Field(
        default="auto",
        pattern="^(auto|on|off)$",
        description="VAE tiling for decodes: on, "
        "off, or auto (tile a decode only when it ran out of memory).",
    )
    overlap_decode: str = Field(
        default="auto",
        pattern="^(auto|on|off)$",
        description="Decode a batch on a second "
        "thread (and CUDA stream) while the next one denoises: on, off, or auto (on for CUDA; "
        "slower on CPU, where both share the cores).",
    )

    @model_validator(mode="after")
    def _engine_switches_fit(self) -> EngineSettings:
        if self.cuda_graphs and not self.compile:
            raise ValueError(
                "KREASERVE_CUDA_GRAPHS needs KREASERVE_COMPILE: CUDA graphs are "
                "captured by torch.compile's reduce-overhead mode"
            )
        return self

    @field_validator("engine_gpus")
    @classmethod
    def _gpu_list(cls, value: str) -> str:
        value = value.strip()
        if value in ("auto", "none") or re.fullmatch(r"\d+(\s*,\s*\d+)*", value):
            return value
        raise ValueError("it takes auto, none, or GPU indexes separated by commas, such as 0,1,2,3")
