"""The full-size architecture the GPU benchmark builds, checked on the meta device.

No weights are allocated: this proves the GPU command assembles the real sizes (about 13B
transformer + 4B text encoder) into a `Krea2Pipeline` before a GPU is ever lent.
"""

from __future__ import annotations

import torch

from bench.full_size import build_full_size_pipeline, count_parameters


def test_the_full_size_components_have_the_published_sizes() -> None:
    counts = count_parameters()
    assert counts == {
        "transformer": 12_820_073_036,
        "text_encoder": 4_022_468_096,
        "vae": 126_892_531,
    }


def test_the_full_size_pipeline_assembles_on_the_meta_device() -> None:
    pipe = build_full_size_pipeline("meta", torch.bfloat16)
    assert type(pipe).__name__ == "Krea2Pipeline" and pipe.config.is_distilled
    for module in (pipe.transformer, pipe.text_encoder, pipe.vae):
        parameter = next(module.parameters())
        assert parameter.device.type == "meta" and parameter.dtype == torch.bfloat16
    assert pipe.transformer.config.num_layers == 28
    assert pipe.text_encoder.config.text_config.hidden_size == 2560
    assert pipe.tokenizer("a red fox").input_ids  # the real Qwen vocabulary, offline
