"""How an engine runs the model: each speed-up is a switch an operator sets and can measure.

Plain data (no torch), so the worker can hand it to its engine child at spawn. The defaults
follow the measurements in BENCHMARKS.md; `engine.speedups` applies them to a loaded pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass

#: What `vae_tiling` accepts. "auto": decode whole, and tile only after an out-of-memory.
VAE_TILING = ("auto", "on", "off")
#: What `overlap` accepts. "auto": on for CUDA, off on CPU (measured: decoding on a second
#: thread while the next batch denoises shares the same cores there and is slower).
OVERLAP = ("auto", "on", "off")


@dataclass(frozen=True)
class EngineOptions:
    """Speed-ups of the engine (all off: the plain pipeline's arithmetic, bit for bit).

    trim_padding: text conditioning cut to the real prompt length (mask-free when possible);
        equal to the padded pipeline up to float rounding (see `engine.sampler`).
    attention_backend: a diffusers attention backend name ("native", "flash", "_native_cudnn",
        "flash_varlen", ...); None keeps the default (PyTorch SDPA).
    compile: regional compilation of the repeated transformer blocks (`compile_repeated_blocks`).
    cuda_graphs: with `compile` on CUDA, capture CUDA graphs ("reduce-overhead").
    fp8: FP8 weights and activations for the transformer's linear layers (torchao
        `Float8DynamicActivationFloat8WeightConfig`, per-row scales); CUDA compute 8.9+.
    vae_tiling: "on", "off", or "auto" (tile a decode only when it ran out of memory).
    overlap: decode (and PNG-encode) a batch on a second thread, and on CUDA a second
        stream, while the next batch denoises: "on", "off", or "auto" (on for CUDA only).
    """

    trim_padding: bool = False
    attention_backend: str | None = None
    compile: bool = False
    cuda_graphs: bool = False
    fp8: bool = False
    vae_tiling: str = "auto"
    overlap: str = "auto"

    def __post_init__(self) -> None:
        if self.overlap not in OVERLAP:
            raise ValueError(f"overlap must be one of {', '.join(OVERLAP)}, got {self.overlap!r}")
        if self.vae_tiling not in VAE_TILING:
            raise ValueError(
                f"vae_tiling must be one of {', '.join(VAE_TILING)}, got {self.vae_tiling!r}"
            )
        if self.cuda_graphs and not self.compile:
            raise ValueError(
                "cuda_graphs needs compile: CUDA graphs are captured by "
                "torch.compile's reduce-overhead mode"
            )

    def describe(self) -> list[str]:
        """The switches that are on, for logs and benchmark tables."""
        on = ["trim_padding"] if self.trim_padding else []
        if self.attention_backend:
            on.append(f"attention={self.attention_backend}")
        on += [name for name in ("compile", "cuda_graphs", "fp8") if getattr(self, name)]
        if self.vae_tiling == "on":
            on.append("vae_tiling")
        if self.overlap != "auto":
            on.append(f"overlap={self.overlap}")
        return on

    def overlaps(self, device: str) -> bool:
        """Whether decoding runs beside the next batch's denoising on `device`."""
        if self.overlap == "auto":
            return device.startswith("cuda")
        return self.overlap == "on"
