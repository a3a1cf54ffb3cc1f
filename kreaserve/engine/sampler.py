"""The denoising run of a loaded `Krea2Pipeline`, split into encode, denoise and decode.

`Krea2Pipeline.__call__` does all three in one call over a fixed batch. A serving engine needs
what that call cannot give: dropping one cancelled item from a running batch before its next
step, skipping the VAE decode of cancelled items, decoding each image on its own (results
stream out, and memory stays that of one image) on another thread while the next batch
denoises, text conditioning trimmed to the real prompt length, and a prompt that cannot
write control tokens of the chat template (it is tokenized as plain text). So this module runs
the pipeline's own building blocks (its text encoder with the pipeline's template,
`prepare_latents`, `prepare_position_ids`, its scheduler, transformer and VAE) in the same
order as `__call__`. The tests hold it to the plain pipeline: bit-identical without trimming,
within float rounding with it (for prompts without control-token text).

Trimming: the pipeline lays the text out as `[prompt | PAD ... | suffix]` padded to a fixed
length with a key mask. Padding consumes no position (the encoder's positions count only real
tokens; the transformer puts all text at the rotary origin) and is masked as a key everywhere,
so dropping it changes nothing but rounding. A batch whose prompts have equal trimmed lengths
(always true for one image) then needs no mask at all, which lets mask-free attention
kernels run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["Conditioning", "Sampler", "AllCancelled"]


class AllCancelled(Exception):
    """Every item of the batch was cancelled; the run stopped before its next step."""


@dataclass
class Conditioning:
    """Text conditioning for a batch: embeddings, their key mask (None: every token is valid)."""

    embeds: torch.Tensor
    mask: torch.Tensor | None
    negative: Conditioning | None = None

    def select(self, rows: torch.Tensor) -> Conditioning:
        """The conditioning of the batch rows `rows` (an index tensor)."""
        return Conditioning(
            self.embeds.index_select(0, rows),
            None if self.mask is None else self.mask.index_select(0, rows),
            None if self.negative is None else self.negative.select(rows),
        )


class Sampler:
    """Runs `pipe`'s encode, denoising loop and decode step by step (see the module doc)."""

    def __init__(
        self, pipe: Any, *, guidance_scale: float, max_sequence_length: int, trim_padding: bool
    ) -> None:
        self.pipe = pipe
        self.guidance_scale = guidance_scale
        self.max_sequence_length = max_sequence_length
        self.trim_padding = trim_padding

    @property
    def device(self) -> torch.device:
        return self.pipe._execution_device

    # --- text ---------------------------------------------------------------------------

    def encode(self, prompts: Sequence[str]) -> Conditioning:
        """Text conditioning for `prompts` (and for the empty negative prompt under guidance)."""
        cond = self._encode(list(prompts))
        if self.guidance_scale > 0:
            cond.negative = self._encode([""] * len(prompts))
        return cond

    def _encode(self, prompts: list[str]) -> Conditioning:
        embeds, mask = self._text_hidden_states(prompts, pad_to_max=not self.trim_padding)
        if not self.trim_padding:
            return Conditioning(embeds, mask)
        return _compact(embeds, mask)

    def _text_hidden_states(
        self, prompts: list[str], *, pad_to_max: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`Krea2Pipeline.get_text_hidden_states`, but the prompt is tokenized as plain text.

        Same template, truncation, padding (to the fixed length, or only to the longest prompt
        when `pad_to_max` is false) and positions (counting real tokens only) as the pipeline;
        see `template_input_ids` for why the prompt is tokenized on its own.
        """
        from .tokenizer import template_input_ids

        pipe = self.pipe
        prefix_idx = pipe.prompt_template_encode_start_idx
        ids, valid = template_input_ids(
            pipe.tokenizer,
            prompts,
            prefix=pipe.prompt_template_encode_prefix,
            suffix=pipe.prompt_template_encode_suffix,
            max_prompt_tokens=self.max_sequence_length
            - pipe.prompt_template_encode_num_suffix_tokens,
            pad_to_max=pad_to_max,
        )
        input_ids = torch.tensor(ids, dtype=torch.long, device=self.device)
        mask = torch.tensor(valid, dtype=torch.bool, device=self.device)
        position_ids = (mask.long().cumsum(dim=-1) - 1).clamp(min=0).unsqueeze(0).expand(3, -1, -1)
        outputs = pipe.text_encoder(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=position_ids,
            output_hidden_states=True,
        )
        hidden = torch.stack(
            [outputs.hidden_states[i] for i in pipe.text_encoder_select_layers], dim=2
        )
        return hidden[:, prefix_idx:], mask[:, prefix_idx:]

    # --- denoising ----------------------------------------------------------------------

    def denoise(
        self,
        cond: Conditioning,
        generators: Sequence[torch.Generator],
        *,
        width: int,
        height: int,
        steps: int,
        on_step: Callable[[int, list[int]], None] | None = None,
        cancelled: Callable[[list[int]], set[int]] | None = None,
    ) -> tuple[torch.Tensor, list[int]]:
        """Denoise one latent per generator; returns the latents and the batch indexes they are.

        After each step, `on_step(step, live)` reports progress for the live batch indexes and
        `cancelled(live)` names those to drop: they leave the batch before the next step. When
        none is left, `AllCancelled` is raised.
        """
        from diffusers.pipelines.krea2.pipeline_krea2 import calculate_shift, retrieve_timesteps

        pipe, device = self.pipe, self.device
        live = list(range(len(generators)))
        if cancelled is not None and (gone := cancelled(live)):
            live = [i for i in live if i not in gone]
            if not live:
                raise AllCancelled
            cond = cond.select(torch.tensor(live, device=cond.embeds.device))
            generators = [generators[i] for i in live]
        num_channels = pipe.transformer.config.in_channels // (pipe.patch_size**2)
        latents = pipe.prepare_latents(
            len(generators),
            num_channels,
            height,
            width,
            cond.embeds.dtype,
            device,
            list(generators),
        )
        grid = pipe.vae_scale_factor * pipe.patch_size
        position_ids = pipe.prepare_position_ids(
            cond.embeds.shape[1], height // grid, width // grid, device
        )
        negative_ids = position_ids
        if cond.negative is not None and cond.negative.embeds.shape[1] != cond.embeds.shape[1]:
            negative_ids = pipe.prepare_position_ids(
                cond.negative.embeds.shape[1], height // grid, width // grid, device
            )
        sigmas = np.linspace(1.0, 1 / steps, steps)
        config = pipe.scheduler.config
        if pipe.config.is_distilled:
            mu = 1.15
        else:
            mu = calculate_shift(
                latents.shape[1],
                config.get("base_image_seq_len", 256),
                config.get("max_image_seq_len", 6400),
                config.get("base_shift", 0.5),
                config.get("max_shift", 1.15),
            )
        timesteps, _ = retrieve_timesteps(pipe.scheduler, steps, device, sigmas=sigmas, mu=mu)
        pipe.scheduler.set_begin_index(0)
        transformer = pipe.transformer
        for i, t in enumerate(timesteps):
            timestep = (t / config.num_train_timesteps).expand(latents.shape[0]).to(latents.dtype)
            noise = transformer(
                hidden_states=latents,
                encoder_hidden_states=cond.embeds,
                timestep=timestep,
                position_ids=position_ids,
                encoder_attention_mask=cond.mask,
                return_dict=False,
            )[0]
            if cond.negative is not None:
                negative = transformer(
                    hidden_states=latents,
                    encoder_hidden_states=cond.negative.embeds,
                    timestep=timestep,
                    position_ids=negative_ids,
                    encoder_attention_mask=cond.negative.mask,
                    return_dict=False,
                )[0]
                noise = noise + self.guidance_scale * (noise - negative)
            latents = pipe.scheduler.step(noise, t, latents, return_dict=False)[0]
            if on_step is not None:
                on_step(i + 1, live)
            if cancelled is not None and (gone := cancelled(live)):
                keep = [row for row, index in enumerate(live) if index not in gone]
                if not keep:
                    raise AllCancelled
                rows = torch.tensor(keep, device=latents.device)
                latents = latents.index_select(0, rows)
                cond = cond.select(rows)
                live = [live[row] for row in keep]
        return latents, live

    # --- pixels -------------------------------------------------------------------------

    def decode(self, latents: torch.Tensor, *, width: int, height: int) -> list[Any]:
        """PIL images of packed `latents`, as the pipeline's own decode makes them."""
        pipe = self.pipe
        vae = pipe.vae
        latents = pipe._unpack_latents(latents, height, width).to(vae.dtype)
        shape = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents.device, latents.dtype)
        # As the pipeline rounds it: the reciprocal is taken after the cast to the VAE dtype.
        inverse_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(
            latents.device, latents.dtype
        )
        latents = latents / inverse_std + mean
        image = vae.decode(latents, return_dict=False)[0][:, :, 0]
        return pipe.image_processor.postprocess(image, output_type="pil")


def _compact(embeds: torch.Tensor, mask: torch.Tensor) -> Conditioning:
    """Move each row's valid tokens to the front, cut the common padding, drop an all-valid mask.

    Valid tokens keep their order; text has no positions in the transformer, so this is the
    same conditioning with fewer masked keys.
    """
    lengths = mask.sum(dim=1)
    longest = int(lengths.max())
    if bool((lengths == longest).all()):
        rows = [embeds[i][mask[i]] for i in range(embeds.shape[0])]
        return Conditioning(torch.stack(rows), None)
    out = embeds.new_zeros((embeds.shape[0], longest, *embeds.shape[2:]))
    out_mask = torch.zeros((embeds.shape[0], longest), dtype=torch.bool, device=mask.device)
    for i in range(embeds.shape[0]):
        n = int(lengths[i])
        out[i, :n] = embeds[i][mask[i]]
        out_mask[i, :n] = True
    return Conditioning(out, out_mask)
