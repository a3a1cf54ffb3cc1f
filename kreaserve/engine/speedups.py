"""Apply `EngineOptions` to a loaded `Krea2Pipeline`, refusing what the device cannot do.

Each switch uses the library that owns the technique: diffusers' attention dispatcher and
regional compilation, torchao's FP8 quantization, torch.compile's CUDA graphs. A switch the
hardware cannot honour fails the load with a message that says so, rather than running
silently slower or wrong.
"""

from __future__ import annotations

import logging
from typing import Any

from .options import EngineOptions

log = logging.getLogger("kreaserve.engine")

#: FP8 matrix multiplies need Ada or Hopper (compute capability 8.9) or newer.
FP8_MIN_CAPABILITY = (8, 9)


class OptionError(Exception):
    """An engine option cannot be honoured here; the message says why and what to do."""


def apply(pipe: Any, options: EngineOptions, device: str) -> None:
    """Switch on `options` for `pipe` (already on `device`). Order matters: FP8 swaps the
    linear layers' weights before compilation traces them."""
    import torch

    cuda = torch.device(device).type == "cuda"
    transformer = pipe.transformer
    if options.fp8:
        _fp8(transformer, cuda, device)
    if options.attention_backend:
        try:
            transformer.set_attention_backend(options.attention_backend)
        except (ValueError, RuntimeError, ImportError) as exc:
            raise OptionError(
                f"Attention backend {options.attention_backend!r} cannot be used here: {exc}. "
                "Unset KREASERVE_ATTENTION_BACKEND to use PyTorch's SDPA."
            ) from exc
    if options.cuda_graphs and not cuda:
        raise OptionError(
            f"KREASERVE_CUDA_GRAPHS needs a CUDA device; this engine runs on {device}."
        )
    if options.compile:
        # Trimmed text makes the sequence length vary per prompt; mark it dynamic up front
        # instead of recompiling for every new length.
        transformer.compile_repeated_blocks(
            fullgraph=True,
            dynamic=True if options.trim_padding else None,
            mode="reduce-overhead" if options.cuda_graphs else None,
        )
    if options.vae_tiling == "on":
        pipe.vae.enable_tiling()


def _fp8(transformer: Any, cuda: bool, device: str) -> None:
    import torch

    if not cuda:
        raise OptionError(
            f"KREASERVE_FP8 needs an NVIDIA GPU with compute capability "
            f"{FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]} or newer (L40S, H100, "
            f"H200, B200); this engine runs on {device}."
        )
    capability = torch.cuda.get_device_capability(torch.device(device))
    if capability < FP8_MIN_CAPABILITY:
        raise OptionError(
            f"KREASERVE_FP8 needs compute capability 8.9 or newer; "
            f"{torch.cuda.get_device_name(torch.device(device))} has "
            f"{capability[0]}.{capability[1]}. Unset KREASERVE_FP8."
        )
    try:
        from torchao.quantization import (
            Float8DynamicActivationFloat8WeightConfig,
            PerRow,
            quantize_,
        )
    except ImportError as exc:
        raise OptionError(
            f"KREASERVE_FP8 needs torchao: pip install 'kreaserve[gpu]' ({exc})."
        ) from exc
    quantize_(transformer, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))
    log.info("transformer linear layers quantized to FP8 (per-row scales)")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is an allocation failure (CUDA or host), which a smaller batch may avoid."""
    import torch

    if isinstance(exc, MemoryError | torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def free_memory(device: str) -> None:
    """Return cached allocator blocks after an out-of-memory, so a retry starts clean."""
    import gc

    import torch

    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
