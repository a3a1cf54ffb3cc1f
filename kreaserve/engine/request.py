"""What one generation asks for, and what a batch is between its denoising and its decodes.

Plain data and their checks, no torch: the engine child builds these from the worker's
messages before the pipeline is involved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kreaserve.contract import MAX_PROMPT_TOKENS

#: The pipeline's text length counts the template's 5-token assistant suffix, so a
#: 640-token prompt needs 645 to reach the text encoder whole (at 640 the pipeline
#: silently keeps only 635 prompt tokens).
MAX_SEQUENCE_LENGTH = MAX_PROMPT_TOKENS + 5
#: Krea 2 Turbo is distilled for 8 steps without classifier-free guidance.
DEFAULT_STEPS = 8
#: Guidance for a non-distilled (base) checkpoint, the pipeline's documented default. Krea 2's
#: convention: guidance is on whenever the scale is > 0 (velocity = cond + s * (cond - uncond)).
BASE_GUIDANCE_SCALE = 4.5
SIZE_MULTIPLE = 16
MAX_SIDE = 4096
MAX_STEPS = 100


class GenerationCancelled(Exception):
    """A generation was cancelled (by `should_cancel`) before it finished; nothing was decoded."""


@dataclass
class DenoisedBatch:
    """A batch after its denoising: latents of the live requests, waiting for their decode.

    `live` holds the indexes (into the batch's requests) that the rows of `latents` are;
    `ready` is the CUDA event a decode on another stream waits for (None on CPU)."""

    latents: Any
    live: list[int]
    width: int
    height: int
    ready: Any = None


@dataclass(frozen=True)
class GenerateRequest:
    """One image to generate. Width and height are exact output pixels (multiples of 16)."""

    prompt: str
    width: int
    height: int
    seed: int
    steps: int = DEFAULT_STEPS

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str):
            raise TypeError("prompt must be a str")
        for name in ("width", "height", "seed", "steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value % SIZE_MULTIPLE or not SIZE_MULTIPLE <= value <= MAX_SIDE:
                raise ValueError(
                    f"{name} must be a multiple of {SIZE_MULTIPLE} between {SIZE_MULTIPLE} and "
                    f"{MAX_SIDE}, got {value}"
                )
        if not 1 <= self.steps <= MAX_STEPS:
            raise ValueError(f"steps must be between 1 and {MAX_STEPS}, got {self.steps}")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be between 0 and 2**63 - 1, got {self.seed}")
