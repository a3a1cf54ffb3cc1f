"""Fidelity of the engine's own step loop: batches, trimmed text, per-item cancel, options.

The reference is always the plain `Krea2Pipeline.__call__` on the same loaded weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from kreaserve.engine import speedups
from kreaserve.engine.options import EngineOptions
from kreaserve.engine.pipeline import (
    MAX_SEQUENCE_LENGTH,
    Engine,
    GenerateRequest,
    WeightsError,
)

# Prompts of different token lengths, so a trimmed batch needs a key mask.
PROMPTS = [
    "a red fox in the snow",
    "a lighthouse at dusk, long exposure, waves crashing on black rocks below a stormy sky",
    "cat",
]
SEEDS = [11, 22, 33]
SIZE = 256


def pixels(image: Any) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(np.int16)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def requests() -> list[GenerateRequest]:
    return [GenerateRequest(p, SIZE, SIZE, seed=s) for p, s in zip(PROMPTS, SEEDS, strict=True)]


def plain(engine: Engine, output_type: str = "pil") -> Any:
    """What a user gets from the plain pipeline for the same batch."""
    device = engine.info["device"]
    return engine.pipe(
        prompt=PROMPTS,
        width=SIZE,
        height=SIZE,
        num_inference_steps=8,
        guidance_scale=0.0,
        max_sequence_length=MAX_SEQUENCE_LENGTH,
        generator=[torch.Generator(device).manual_seed(s) for s in SEEDS],
        output_type=output_type,
    ).images


@pytest.fixture(scope="module")
def untrimmed(weights_cache: Path) -> Engine:
    return Engine.load(
        "tiny-random",
        cache_dir=weights_cache,
        device="cpu",
        options=EngineOptions(trim_padding=False),
    )


@pytest.fixture(scope="module")
def trimmed(weights_cache: Path) -> Engine:
    return Engine.load(
        "tiny-random",
        cache_dir=weights_cache,
        device="cpu",
        options=EngineOptions(trim_padding=True),
    )


@pytest.fixture(scope="module")
def trimmed_fp32(weights_cache: Path) -> Engine:
    return Engine.load(
        "tiny-random",
        cache_dir=weights_cache,
        device="cpu",
        dtype="fp32",
        options=EngineOptions(trim_padding=True),
    )


def test_untrimmed_batch_is_the_plain_pipeline_bit_for_bit(untrimmed: Engine) -> None:
    reference = [pixels(i) for i in plain(untrimmed)]
    batch = [pixels(i) for i in untrimmed.generate_batch(requests())]
    for ours, theirs in zip(batch, reference, strict=True):
        assert np.array_equal(ours, theirs)
    # And each image of the batch is exactly the image its request gets alone.
    for request, ours in zip(requests(), batch, strict=True):
        assert np.array_equal(pixels(untrimmed.generate(request)), ours)


def test_trimmed_text_equals_padded_text_up_to_float32_rounding(trimmed_fp32: Engine) -> None:
    """The numerical proof behind trim_padding: in float32, dropping the masked padding
    changes the latents by rounding only, and the pixels by at most one level."""
    reference = plain(trimmed_fp32, output_type="latent")
    batch = trimmed_fp32.denoise(requests())
    assert batch is not None and batch.live == [0, 1, 2]
    assert torch.allclose(batch.latents, reference, rtol=0, atol=1e-4), (
        (batch.latents - reference).abs().max()
    )
    reference_pixels = [pixels(i) for i in plain(trimmed_fp32)]
    for request, theirs in zip(requests(), reference_pixels, strict=True):
        assert np.abs(pixels(trimmed_fp32.generate(request)) - theirs).max() <= 1
    for ours, theirs in zip(trimmed_fp32.generate_batch(requests()), reference_pixels, strict=True):
        assert np.abs(pixels(ours) - theirs).max() <= 1


def test_trimmed_text_in_bf16_is_within_rounding_of_the_plain_pipeline(trimmed: Engine) -> None:
    """bf16 keeps 8 bits of mantissa and random weights amplify rounding, so pixels move;
    the images stay the same images (PSNR well above 40 dB; BENCHMARKS.md has full size)."""
    reference = [pixels(i) for i in plain(trimmed)]
    batch = [pixels(i) for i in trimmed.generate_batch(requests())]
    alone = [pixels(trimmed.generate(r)) for r in requests()]
    for ours, single, theirs in zip(batch, alone, reference, strict=True):
        assert psnr(ours, theirs) > 40 and psnr(single, theirs) > 40
        assert psnr(ours, single) > 40


def test_trimming_drops_the_padding_and_the_mask(trimmed: Engine, untrimmed: Engine) -> None:
    tokenizer = trimmed.pipe.tokenizer
    lengths = [len(tokenizer(p).input_ids) + 5 for p in PROMPTS]  # + the assistant suffix
    with torch.no_grad():
        alone = trimmed._sampler.encode([PROMPTS[0]])
        mixed = trimmed._sampler.encode(PROMPTS)
        padded = untrimmed._sampler.encode(PROMPTS)
    assert alone.mask is None and alone.embeds.shape[1] == lengths[0]
    assert mixed.embeds.shape[1] == max(lengths)
    assert mixed.mask is not None and mixed.mask.sum(dim=1).tolist() == lengths
    assert padded.embeds.shape[1] == MAX_SEQUENCE_LENGTH
    assert padded.mask is not None and padded.mask.sum(dim=1).tolist() == lengths


def test_a_cancelled_item_leaves_the_batch_and_the_others_are_unchanged(
    untrimmed: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = [pixels(i) for i in untrimmed.generate_batch(requests())]
    decodes: list[int] = []
    real_decode = untrimmed._sampler.decode
    rows: list[int] = []

    def counting_decode(latents: Any, **kwargs: Any) -> Any:
        decodes.append(latents.shape[0])
        return real_decode(latents, **kwargs)

    real_transformer = untrimmed.pipe.transformer.forward

    def watching_transformer(*args: Any, **kwargs: Any) -> Any:
        rows.append(kwargs["hidden_states"].shape[0])
        return real_transformer(*args, **kwargs)

    monkeypatch.setattr(untrimmed._sampler, "decode", counting_decode)
    monkeypatch.setattr(untrimmed.pipe.transformer, "forward", watching_transformer)
    steps: dict[int, list[int]] = {0: [], 1: [], 2: []}
    images = untrimmed.generate_batch(
        requests(),
        on_step=lambda index, step, total: steps[index].append(step),
        is_cancelled=lambda index: index == 1 and len(steps[1]) >= 3,
    )
    assert images[1] is None
    assert steps[1] == [1, 2, 3] and steps[0] == steps[2] == list(range(1, 9))
    assert rows == [3, 3, 3, 2, 2, 2, 2, 2]  # it left before step 4
    assert decodes == [1, 1]  # never decoded
    assert np.array_equal(pixels(images[0]), full[0])
    assert np.array_equal(pixels(images[2]), full[2])


def test_a_batch_where_every_item_is_cancelled_decodes_nothing(untrimmed: Engine) -> None:
    assert untrimmed.denoise(requests(), is_cancelled=lambda index: True) is None
    assert untrimmed.generate_batch(requests(), is_cancelled=lambda index: True) == [None] * 3


def test_a_batch_must_share_size_and_steps(untrimmed: Engine) -> None:
    with pytest.raises(ValueError, match="same size"):
        untrimmed.generate_batch(
            [GenerateRequest("a", 256, 256, seed=1), GenerateRequest("b", 512, 256, seed=1)]
        )
    with pytest.raises(ValueError, match="same size"):
        untrimmed.generate_batch(
            [
                GenerateRequest("a", 256, 256, seed=1),
                GenerateRequest("b", 256, 256, seed=1, steps=4),
            ]
        )
    with pytest.raises(ValueError, match="at least one"):
        untrimmed.generate_batch([])


def test_a_decode_out_of_memory_is_retried_tiled_when_tiling_is_auto(
    untrimmed: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = GenerateRequest(PROMPTS[0], 512, 512, seed=3)
    expected = pixels(untrimmed.generate(request))
    vae = untrimmed.pipe.vae
    real_decode = vae.decode
    tiling_seen: list[bool] = []

    def decode_that_needs_tiles(*args: Any, **kwargs: Any) -> Any:
        tiling_seen.append(vae.use_tiling)
        if not vae.use_tiling:  # what a GPU without room for a whole 2K decode does
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(vae, "decode", decode_that_needs_tiles)
    image = pixels(untrimmed.generate(request))
    assert tiling_seen == [False, True] and vae.use_tiling is False  # tiled once, then off
    assert psnr(image, expected) > 30  # tiles blend at their seams; the image is the same

    off = Engine(
        untrimmed.pipe,
        weights=untrimmed._weights,
        device="cpu",
        dtype=untrimmed._dtype,
        source="test",
        options=EngineOptions(vae_tiling="off"),
    )
    with pytest.raises(torch.OutOfMemoryError):
        off.generate(request)


def test_a_tiled_retry_that_fails_too_is_reported_as_out_of_memory(
    untrimmed: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a host memory cap oneDNN reports a failed allocation as "could not create a
    primitive"; after a whole decode ran out of memory that is still a memory failure."""
    vae = untrimmed.pipe.vae
    tiling_seen: list[bool] = []

    def decode_that_never_fits(*args: Any, **kwargs: Any) -> Any:
        tiling_seen.append(vae.use_tiling)
        if not vae.use_tiling:
            raise RuntimeError(
                "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                "can't allocate memory: you tried to allocate 9663676416 bytes"
            )
        raise RuntimeError("could not create a primitive")

    monkeypatch.setattr(vae, "decode", decode_that_never_fits)
    with pytest.raises(MemoryError, match="tiled retry failed too .*could not create") as caught:
        untrimmed.generate(GenerateRequest(PROMPTS[0], 512, 512, seed=3))
    assert tiling_seen == [False, True] and vae.use_tiling is False
    assert speedups.is_out_of_memory(caught.value)


def test_out_of_memory_is_recognised_for_cuda_and_host_allocations() -> None:
    assert speedups.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert speedups.is_out_of_memory(MemoryError())
    assert speedups.is_out_of_memory(
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"
        )
    )
    assert not speedups.is_out_of_memory(RuntimeError("shape mismatch"))
    assert not speedups.is_out_of_memory(ValueError("out of memory"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (EngineOptions(fp8=True), "needs an NVIDIA GPU with compute capability 8.9"),
        (EngineOptions(compile=True, cuda_graphs=True), "needs a CUDA device"),
        (EngineOptions(attention_backend="no-such-kernel"), "cannot be used here"),
    ],
)
def test_options_the_device_cannot_honour_fail_the_load_clearly(
    weights_cache: Path, options: EngineOptions, message: str
) -> None:
    with pytest.raises(WeightsError, match=message):
        Engine.load("tiny-random", cache_dir=weights_cache, device="cpu", options=options)


def test_option_values_are_checked() -> None:
    with pytest.raises(ValueError, match="cuda_graphs needs compile"):
        EngineOptions(cuda_graphs=True)
    with pytest.raises(ValueError, match="vae_tiling"):
        EngineOptions(vae_tiling="sometimes")
    with pytest.raises(ValueError, match="overlap"):
        EngineOptions(overlap="maybe")
    assert EngineOptions().describe() == []
    assert EngineOptions(trim_padding=True, fp8=True).describe() == ["trim_padding", "fp8"]
    assert EngineOptions().overlaps("cuda:0") and not EngineOptions().overlaps("cpu")
    assert EngineOptions(overlap="on").overlaps("cpu")


@pytest.fixture(scope="module")
def compiled(weights_cache: Path) -> Engine:
    """Its own load: compilation changes the pipeline in place."""
    return Engine.load(
        "tiny-random",
        cache_dir=weights_cache,
        device="cpu",
        options=EngineOptions(trim_padding=True, compile=True),
    )


# Inductor itself still calls `torch.jit.script_method` while compiling (torch 2.13).
@pytest.mark.background
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compile_compiles_the_repeated_blocks_and_keeps_the_images(
    compiled: Engine, trimmed: Engine
) -> None:
    """`compile` on CPU through inductor: every repeated transformer block is compiled, the
    warm-up builds every graph a batched, trimmed engine needs (another prompt length,
    another size, a masked batch of 3 and an unmasked batch of 2 compile nothing new), and
    the images are the eager engine's images up to kernel rounding."""
    from torch._dynamo.utils import counters

    transformer = compiled.pipe.transformer
    blocks = [m for m in transformer.modules() if type(m).__name__ in transformer._repeated_blocks]
    assert blocks and all(block._compiled_call_impl is not None for block in blocks)
    assert trimmed.pipe.transformer is not transformer

    before = counters["stats"]["unique_graphs"]
    compiled.warmup(((SIZE, SIZE),), batch_size=2)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > before  # the warm-up compiled

    alone = GenerateRequest(PROMPTS[1], SIZE, SIZE, seed=SEEDS[1])  # not a warm-up length
    assert psnr(pixels(compiled.generate(alone)), pixels(trimmed.generate(alone))) > 40
    wide = GenerateRequest(PROMPTS[0], 2 * SIZE, SIZE, seed=SEEDS[0])
    assert psnr(pixels(compiled.generate(wide)), pixels(trimmed.generate(wide))) > 40
    masked = compiled.generate_batch(requests())  # three lengths: a key mask
    for ours, theirs in zip(masked, trimmed.generate_batch(requests()), strict=True):
        assert psnr(pixels(ours), pixels(theirs)) > 40
    equal = [
        GenerateRequest("a red fox", SIZE, SIZE, seed=1),
        GenerateRequest("a red cat", SIZE, SIZE, seed=2),
    ]
    with torch.no_grad():
        assert compiled._sampler.encode([r.prompt for r in equal]).mask is None
    for ours, theirs in zip(
        compiled.generate_batch(equal), trimmed.generate_batch(equal), strict=True
    ):
        assert psnr(pixels(ours), pixels(theirs)) > 40
    assert counters["stats"]["unique_graphs"] == graphs, "a shape the warm-up covers recompiled"
