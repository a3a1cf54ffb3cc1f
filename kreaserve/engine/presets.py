"""Weights presets: small, architecture-faithful Krea2Pipelines with fixed random weights.

A preset is the real `Krea2Pipeline` (Qwen3-VL text encoder with the real 151,936-token
vocabulary and the real Qwen tokenizer, Krea 2 transformer, Qwen-Image VAE, flow-matching
scheduler configured like the turbo checkpoint) shrunk to a few million parameters. Weights come
from a fixed torch seed, so every build of a preset is bit-identical on any machine. Its images
are noise; presets exist so the whole service runs and is tested without the 35 GB model.

`ensure_preset(name, cache_dir)` builds a preset once into `<cache_dir>/<name>-v<N>/` with
`save_pretrained`, atomically and safely under concurrent processes, and returns that directory,
which `Krea2Pipeline.from_pretrained` loads like any other.

Presets: "tiny-random" (tests, CPU development) and "mid-random" (transformer hidden 128, text
hidden 64: a stand-in with real compute for overhead benchmarks).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kreaserve import cachedir

__all__ = [
    "PRESETS",
    "PresetSpec",
    "build_preset_pipeline",
    "ensure_preset",
    "ensure_tiny_random",
    "ensure_mid_random",
    "is_preset",
    "preset_dir",
]

#: Written last into a preset directory; its presence means the build completed.
MARKER_FILE = "kreaserve-preset.json"


@dataclass(frozen=True)
class PresetSpec:
    """Sizes of one random preset. Bump `version` when this or the build changes."""

    name: str
    version: int
    seed: int
    # text encoder (Qwen3-VL text model)
    text_hidden: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    text_head_dim: int
    text_intermediate: int
    mrope_section: tuple[int, int, int]
    # transformer
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    axes_dims_rope: tuple[int, int, int]
    timestep_embed_dim: int
    fusion_heads: int
    fusion_intermediate: int
    fusion_layerwise_blocks: int
    fusion_refiner_blocks: int
    # VAE
    vae_base_dim: int
    # std of the random values given to the (zero-initialised) scale_shift_tables
    scale_shift_std: float = 0.1

    @property
    def dirname(self) -> str:
        return f"{self.name}-v{self.version}"


PRESETS: dict[str, PresetSpec] = {
    "tiny-random": PresetSpec(
        name="tiny-random",
        version=1,
        seed=20260101,
        text_hidden=32,
        text_layers=4,
        text_heads=2,
        text_kv_heads=1,
        text_head_dim=16,
        text_intermediate=64,
        mrope_section=(4, 2, 2),
        layers=2,
        heads=2,
        kv_heads=1,
        head_dim=16,
        intermediate=64,
        axes_dims_rope=(4, 6, 6),
        timestep_embed_dim=32,
        fusion_heads=2,
        fusion_intermediate=64,
        fusion_layerwise_blocks=1,
        fusion_refiner_blocks=1,
        vae_base_dim=2,
    ),
    "mid-random": PresetSpec(
        name="mid-random",
        version=1,
        seed=20260102,
        text_hidden=64,
        text_layers=4,
        text_heads=4,
        text_kv_heads=2,
        text_head_dim=16,
        text_intermediate=192,
        mrope_section=(4, 2, 2),
        layers=4,
        heads=4,
        kv_heads=2,
        head_dim=32,
        intermediate=512,
        axes_dims_rope=(8, 12, 12),
        timestep_embed_dim=64,
        fusion_heads=4,
        fusion_intermediate=128,
        fusion_layerwise_blocks=1,
        fusion_refiner_blocks=2,
        vae_base_dim=4,
    ),
}


def is_preset(name: str) -> bool:
    """Whether `name` names a random-weights preset."""
    return name in PRESETS


def preset_dir(name: str, cache_dir: Path) -> Path:
    """Where `ensure_preset(name, cache_dir)` puts (or has put) the preset."""
    return Path(cache_dir) / _spec(name).dirname


def _spec(name: str) -> PresetSpec:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None


def build_preset_pipeline(spec: PresetSpec) -> Any:
    """Build the preset's `Krea2Pipeline` in memory (float32, CPU), deterministic from `spec.seed`.

    The global torch RNG state is saved and restored around the build.
    """
    import torch
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        Krea2Pipeline,
        Krea2Transformer2DModel,
    )
    from transformers import Qwen3VLConfig, Qwen3VLModel

    from .tokenizer import QWEN_VOCAB_SIZE, build_qwen_tokenizer

    tokenizer = build_qwen_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        text_config = {
            "vocab_size": QWEN_VOCAB_SIZE,
            "hidden_size": spec.text_hidden,
            "intermediate_size": spec.text_intermediate,
            "num_hidden_layers": spec.text_layers,
            "num_attention_heads": spec.text_heads,
            "num_key_value_heads": spec.text_kv_heads,
            "head_dim": spec.text_head_dim,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5000000.0,
                "mrope_section": list(spec.mrope_section),
                "mrope_interleaved": True,
            },
            "pad_token_id": tokenizer.pad_token_id,
        }
        vision_config = {
            "depth": 1,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_heads": 2,
            "out_hidden_size": spec.text_hidden,
            "num_position_embeddings": 16,
            "deepstack_visual_indexes": [],
        }
        text_encoder = Qwen3VLModel(
            Qwen3VLConfig(text_config=text_config, vision_config=vision_config)
        ).eval()

        transformer = Krea2Transformer2DModel(
            in_channels=64,
            num_layers=spec.layers,
            attention_head_dim=spec.head_dim,
            num_attention_heads=spec.heads,
            num_key_value_heads=spec.kv_heads,
            intermediate_size=spec.intermediate,
            timestep_embed_dim=spec.timestep_embed_dim,
            text_hidden_dim=spec.text_hidden,
            num_text_layers=spec.text_layers,
            text_num_attention_heads=spec.fusion_heads,
            text_num_key_value_heads=spec.fusion_heads,
            text_intermediate_size=spec.fusion_intermediate,
            num_layerwise_text_blocks=spec.fusion_layerwise_blocks,
            num_refiner_text_blocks=spec.fusion_refiner_blocks,
            axes_dims_rope=spec.axes_dims_rope,
        ).eval()
        # The real checkpoint's modulation tables are learned; zeros would make every block's
        # modulation identical and the output flat.
        with torch.no_grad():
            for pname, param in transformer.named_parameters():
                if pname.endswith("scale_shift_table"):
                    param.normal_(0.0, spec.scale_shift_std)

        vae = AutoencoderKLQwenImage(
            base_dim=spec.vae_base_dim,
            z_dim=16,
            dim_mult=[1, 2, 4, 4],
            num_res_blocks=0,
            attn_scales=[],
            temperal_downsample=[False, True, True],
        ).eval()

    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=6400,
    )
    return Krea2Pipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        text_encoder_select_layers=tuple(range(1, spec.text_layers + 1)),
        is_distilled=True,
        patch_size=2,
    )


def _is_complete(path: Path, spec: PresetSpec) -> bool:
    try:
        marker = json.loads((path / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("name") == spec.name and marker.get("version") == spec.version


def ensure_preset(name: str, cache_dir: Path) -> Path:
    """Return `<cache_dir>/<name>-v<N>/`, building and saving the preset there on first use.

    Safe with several threads or processes at once: one builds (under an `fcntl.flock` on
    `<cache_dir>/.<name>-v<N>.lock`) into a temporary directory next to the target and renames it
    into place; the others wait and then use it. A completed preset is recognised by its marker
    file, so a half-written directory is never used.
    """
    spec = _spec(name)

    def build(tmp: Path) -> dict[str, Any]:
        build_preset_pipeline(spec).save_pretrained(tmp, safe_serialization=True)
        return {"name": spec.name, "version": spec.version, "spec": asdict(spec)}

    return cachedir.build_once(
        cache_dir,
        spec.dirname,
        marker_file=MARKER_FILE,
        is_complete=lambda path: _is_complete(path, spec),
        build=build,
    )


def ensure_tiny_random(cache_dir: Path) -> Path:
    """`ensure_preset("tiny-random", cache_dir)`."""
    return ensure_preset("tiny-random", cache_dir)


def ensure_mid_random(cache_dir: Path) -> Path:
    """`ensure_preset("mid-random", cache_dir)`."""
    return ensure_preset("mid-random", cache_dir)
