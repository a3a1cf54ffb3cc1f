"""The full-size Krea 2 Turbo architecture with random weights, for speed measurements.

Speed does not depend on the values of the weights, and the real 35 GB cannot be downloaded
here, so GPU figures use this: the transformer at diffusers' `Krea2Transformer2DModel`
defaults (28 blocks, 48 heads of 128, 12.8B parameters), a Qwen3-VL-4B-shaped text encoder
(36 layers, hidden 2560) and the Qwen-Image VAE at its defaults, with the real tokenizer and
the turbo scheduler. `count_parameters()` builds it on the meta device (no memory) to check
the sizes; `build_full_size_pipeline(device)` materialises it on `device` with the layers'
own random initialisation, created directly in the target dtype.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

#: Qwen3-VL-4B's language model (its vision tower is unused for text prompts: kept minimal).
QWEN3_VL_4B_TEXT = {
    "vocab_size": 151936,
    "hidden_size": 2560,
    "intermediate_size": 9728,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_position_embeddings": 262144,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 5000000.0,
        "mrope_section": [24, 20, 20],
        "mrope_interleaved": True,
    },
}
MINIMAL_VISION = {
    "depth": 1,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_heads": 2,
    "out_hidden_size": 2560,
    "num_position_embeddings": 16,
    "deepstack_visual_indexes": [],
}


@contextlib.contextmanager
def _default_dtype(dtype: Any) -> Iterator[None]:
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _modules(device: Any, dtype: Any) -> tuple[Any, Any, Any]:
    import torch
    from diffusers import AutoencoderKLQwenImage, Krea2Transformer2DModel
    from transformers import Qwen3VLConfig, Qwen3VLModel

    with torch.device(device), _default_dtype(dtype):
        transformer = Krea2Transformer2DModel().eval()
        config = Qwen3VLConfig(
            text_config=dict(QWEN3_VL_4B_TEXT, pad_token_id=151643), vision_config=MINIMAL_VISION
        )
        text_encoder = Qwen3VLModel(config).eval()
        vae = AutoencoderKLQwenImage().eval()
    return transformer, text_encoder, vae


def count_parameters() -> dict[str, int]:
    """Parameters of each full-size component, built on the meta device (instant, no memory)."""
    import torch

    transformer, text_encoder, vae = _modules(torch.device("meta"), torch.bfloat16)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    language = text_encoder.language_model
    return {"transformer": count(transformer), "text_encoder": count(language), "vae": count(vae)}


def build_full_size_pipeline(device: str, dtype: Any) -> Any:
    """A full-size `Krea2Pipeline` with random weights on `device` (about 35 GB in bf16)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, Krea2Pipeline

    from kreaserve.engine.tokenizer import build_qwen_tokenizer

    torch.manual_seed(0)
    transformer, text_encoder, vae = _modules(torch.device(device), dtype)
    with torch.no_grad():  # learned in the real checkpoint; zeros would flatten the output
        for name, param in transformer.named_parameters():
            if name.endswith("scale_shift_table"):
                param.normal_(0.0, 0.1)
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=6400,
    )
    pipe = Krea2Pipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=build_qwen_tokenizer(),
        transformer=transformer,
        is_distilled=True,
        patch_size=2,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
