"""Load Krea 2 weights into diffusers' `Krea2Pipeline` and run batches of generations.

`Engine.load(...)` loads what `weights.resolve_weights(spec)` says a spec means (`loading.py`),
always through `Krea2Pipeline.from_pretrained`, and fails with a `WeightsError` whose message
says what went wrong and what to do; `Engine.denoise` / `Engine.decode` run a batch (the child
overlaps them), `Engine.generate(request)` one image, with progress and cancellation
between denoising steps. The requests are `request.GenerateRequest`s.

Importing this module is cheap: torch and diffusers are imported when an engine is loaded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import speedups
from .loading import load_pipeline
from .options import EngineOptions
from .request import (
    BASE_GUIDANCE_SCALE,
    DEFAULT_STEPS,
    MAX_SEQUENCE_LENGTH,
    DenoisedBatch,
    GenerateRequest,
    GenerationCancelled,
)
from .weights import (
    AUTO_CPU_WEIGHTS,
    AUTO_CUDA_WEIGHTS,
    ResolvedWeights,
    WeightsError,
    resolve_weights,
)

if TYPE_CHECKING:
    from PIL.Image import Image

log = logging.getLogger("kreaserve.engine")

__all__ = [
    "AUTO_CPU_WEIGHTS",
    "AUTO_CUDA_WEIGHTS",
    "DEFAULT_STEPS",
    "MAX_SEQUENCE_LENGTH",
    "DenoisedBatch",
    "Engine",
    "EngineOptions",
    "GenerateRequest",
    "GenerationCancelled",
    "ResolvedWeights",
    "WeightsError",
    "resolve_weights",
]


class Engine:
    """A loaded Krea2Pipeline on one device. Create with `Engine.load`; one generation at a time."""

    def __init__(
        self,
        pipe: Any,
        *,
        weights: ResolvedWeights,
        device: str,
        dtype: Any,
        source: str,
        options: EngineOptions | None = None,
    ) -> None:
        from .sampler import Sampler

        self._pipe = pipe
        self._weights = weights
        self._device = device
        self._dtype = dtype
        self._source = source
        self.options = options or EngineOptions()
        self._denoise_lock = threading.Lock()
        self._decode_lock = threading.Lock()
        self._decode_stream: Any = None
        self._multiple = int(pipe.vae_scale_factor * pipe.patch_size)
        self._guidance_scale = 0.0 if pipe.config.is_distilled else BASE_GUIDANCE_SCALE
        self._sampler = Sampler(
            pipe,
            guidance_scale=self._guidance_scale,
            max_sequence_length=MAX_SEQUENCE_LENGTH,
            trim_padding=self.options.trim_padding,
        )

    @classmethod
    def load(
        cls,
        weights: str,
        *,
        cache_dir: Path,
        device: str | None = None,
        dtype: str | None = None,
        options: EngineOptions | None = None,
    ) -> Engine:
        """Resolve `weights`, load them with `Krea2Pipeline.from_pretrained`, move them to `device`.

        `device` defaults to "cuda" when available, else "cpu"; `dtype` to bfloat16 (also the
        faster choice on CPU here). Presets are built into `cache_dir` on first use. Raises
        `WeightsError` (never hangs on an unreachable hub) when the weights cannot be loaded.
        """
        loaded = load_pipeline(
            weights, cache_dir=cache_dir, device=device, dtype=dtype, options=options
        )
        return cls(
            loaded.pipe,
            weights=loaded.weights,
            device=loaded.device,
            dtype=loaded.dtype,
            source=loaded.source,
            options=loaded.options,
        )

    @property
    def pipe(self) -> Any:
        """The underlying `Krea2Pipeline` (benchmarks, tests; not concurrently)."""
        return self._pipe

    @property
    def info(self) -> dict[str, Any]:
        """What is loaded: weights spec and kind, where from, device, dtype, is_random, warning."""
        return {
            "weights": self._weights.spec,
            "kind": self._weights.kind,
            "source": self._source,
            "device": self._device,
            "dtype": str(self._dtype).removeprefix("torch."),
            "is_random": self._weights.is_random,
            "warning": self._weights.warning,
            "speedups": self.options.describe(),
        }

    def _check_batch(self, requests: Sequence[GenerateRequest]) -> GenerateRequest:
        if not requests:
            raise ValueError("a batch needs at least one request")
        if not all(isinstance(r, GenerateRequest) for r in requests):
            raise TypeError("requests must be GenerateRequests")
        first = requests[0]
        if any(
            (r.width, r.height, r.steps) != (first.width, first.height, first.steps)
            for r in requests
        ):
            raise ValueError("every request of a batch must have the same size and steps")
        if first.width % self._multiple or first.height % self._multiple:
            raise ValueError(
                f"width and height must be multiples of {self._multiple}, "
                f"got {first.width}x{first.height}"
            )
        return first

    def denoise(
        self,
        requests: Sequence[GenerateRequest],
        *,
        on_step: Callable[[int, int, int], None] | None = None,
        is_cancelled: Callable[[int], bool] | None = None,
    ) -> DenoisedBatch | None:
        """Encode the prompts and denoise a batch of same-size requests, one seeded generator
        per image (so each image equals the one its request gets alone, up to float rounding).

        `on_step(index, step, total)` is called for each live request after each step;
        `is_cancelled(index)` is asked before the run and after every step, and a request it
        names leaves the batch before the next step (never decoded). Returns None when every
        request was cancelled. One batch denoises at a time; decoding may overlap it.
        """
        import torch

        from .sampler import AllCancelled

        first = self._check_batch(requests)

        def step(done: int, live: list[int]) -> None:
            if on_step is not None:
                for index in live:
                    on_step(index, done, first.steps)

        def cancelled(live: list[int]) -> set[int]:
            return {i for i in live if is_cancelled(i)} if is_cancelled is not None else set()

        with self._denoise_lock, torch.no_grad():
            generators = [torch.Generator(self._device).manual_seed(r.seed) for r in requests]
            try:
                cond = self._sampler.encode([r.prompt for r in requests])
                latents, live = self._sampler.denoise(
                    cond,
                    generators,
                    width=first.width,
                    height=first.height,
                    steps=first.steps,
                    on_step=step,
                    cancelled=cancelled,
                )
            except AllCancelled:
                return None
            ready = None
            if torch.device(self._device).type == "cuda":
                ready = torch.cuda.Event()
                ready.record()
        return DenoisedBatch(latents, live, first.width, first.height, ready)

    def decode(self, batch: DenoisedBatch, index: int) -> Image:
        """The image of request `index` of a denoised batch, decoded alone.

        On CUDA it runs on its own stream, after the batch's denoise finished, so the next
        batch can denoise meanwhile. With `vae_tiling="auto"`, a decode that runs out of memory
        is retried with VAE tiling (and logged).
        """
        import torch

        row = batch.live.index(index)
        latents = batch.latents[row : row + 1]
        with self._decode_lock, torch.no_grad():
            if batch.ready is None:
                image = self._decode(latents, batch.width, batch.height)
            else:
                if self._decode_stream is None:
                    self._decode_stream = torch.cuda.Stream(device=torch.device(self._device))
                stream = self._decode_stream
                with torch.cuda.stream(stream):
                    stream.wait_event(batch.ready)
                    latents.record_stream(stream)
                    image = self._decode(latents, batch.width, batch.height)
        if image.size != (batch.width, batch.height):  # the pipeline rounds sizes; we validated
            raise RuntimeError(
                f"pipeline returned {image.size}, expected {(batch.width, batch.height)}"
            )
        return image

    def _decode(self, latents: Any, width: int, height: int) -> Image:
        vae = self._pipe.vae
        try:
            return self._sampler.decode(latents, width=width, height=height)[0]
        except Exception as exc:
            if (
                self.options.vae_tiling != "auto"
                or vae.use_tiling
                or not speedups.is_out_of_memory(exc)
            ):
                raise
        log.warning(
            "decoding a %dx%d image ran out of memory; retrying with VAE tiling", width, height
        )
        speedups.free_memory(self._device)
        vae.enable_tiling()
        try:
            return self._sampler.decode(latents, width=width, height=height)[0]
        except Exception as retry:
            # The whole decode did not fit; if the tiles do not either, that is still a memory
            # failure, whatever the kernel library calls it (oneDNN under a host memory cap
            # says "could not create a primitive"). Whoever handles it frees the memory, as
            # for any out-of-memory.
            raise MemoryError(
                f"decoding a {width}x{height} image ran out of memory, and the tiled retry "
                f"failed too ({type(retry).__name__}: {retry})"
            ) from retry
        finally:
            vae.disable_tiling()

    def generate_batch(
        self,
        requests: Sequence[GenerateRequest],
        *,
        on_step: Callable[[int, int, int], None] | None = None,
        is_cancelled: Callable[[int], bool] | None = None,
    ) -> list[Image | None]:
        """`denoise` then `decode` each live request; None in place of a cancelled one (a
        request cancelled after its last step is not decoded either)."""
        images: list[Image | None] = [None] * len(requests)
        batch = self.denoise(requests, on_step=on_step, is_cancelled=is_cancelled)
        if batch is None:
            return images
        for index in batch.live:
            if is_cancelled is None or not is_cancelled(index):
                images[index] = self.decode(batch, index)
        return images

    def generate(
        self,
        req: GenerateRequest,
        *,
        on_step: Callable[[int, int], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> Image:
        """Generate one image of exactly `req.width` x `req.height` pixels.

        Deterministic for a given request on a given device and dtype. `on_step(step, total)`
        is called after each denoising step (1..total). `should_cancel()` is asked before the
        run and after each step (the last one too: cancelling then skips the decode, which is
        most of the CPU time); when it returns True the run stops before the next step, nothing
        is decoded, and `GenerationCancelled` is raised.
        """
        if not isinstance(req, GenerateRequest):
            raise TypeError("req must be a GenerateRequest")
        [image] = self.generate_batch(
            [req],
            on_step=None if on_step is None else lambda _index, step, total: on_step(step, total),
            is_cancelled=None if should_cancel is None else lambda _index: should_cancel(),
        )
        if image is None:
            raise GenerationCancelled("cancelled between denoising steps")
        return image

    def warmup(
        self, sizes: Sequence[tuple[int, int]] = ((256, 256),), *, batch_size: int = 1
    ) -> float:
        """Run one generation per size so first-request costs (allocations, compilation) are
        paid now; returns the seconds it took.

        With `batch_size` > 1, also a batch of two prompts of different token lengths (the
        batch carries a key mask) and one of equal lengths (no mask) at the first size: a
        compiled engine builds one graph for each of these (the batch and text lengths are
        dynamic beyond that, measured), which would otherwise stall the first batched tasks.
        """
        start = time.perf_counter()
        for width, height in sizes:
            self.generate(GenerateRequest(prompt="warm-up", width=width, height=height, seed=1))
        if batch_size > 1 and sizes:
            width, height = sizes[0]
            for prompts in (("warm-up", "a longer warm-up prompt"), ("warm-up", "warm-down")):
                self.generate_batch(
                    [GenerateRequest(prompt=p, width=width, height=height, seed=1) for p in prompts]
                )
        return time.perf_counter() - start
