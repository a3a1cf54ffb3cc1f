"""Loading Krea 2 weights for an `Engine`: resolve what a weights spec means, load it with
`Krea2Pipeline.from_pretrained` (building a preset on first use; a local folder's tokenizer
through `tokenizer_files`, which is faster), check that its tokenizer fits the prompt template,
move it to the device and apply the speed-ups. Every failure is a `WeightsError` whose message
says what went wrong and what to do.

Importing this module is cheap: torch and diffusers are imported when weights are loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import speedups
from .options import EngineOptions
from .presets import ensure_preset
from .weights import (
    HOW_TO_CHOOSE,
    ResolvedWeights,
    WeightsError,
    check_directory,
    probe_hub,
    resolve_weights,
    short_cause,
    to_torch_dtype,
)


@dataclass(frozen=True)
class LoadedPipeline:
    """A Krea2Pipeline on its device, with what was loaded and how."""

    pipe: Any
    weights: ResolvedWeights
    device: str
    dtype: Any
    source: str
    options: EngineOptions


def load_pipeline(
    weights: str,
    *,
    cache_dir: Path,
    device: str | None = None,
    dtype: str | None = None,
    options: EngineOptions | None = None,
) -> LoadedPipeline:
    """`Engine.load`'s work (see there): the pipeline, or a `WeightsError`."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_device = torch.device(device)
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available")
    torch_dtype = to_torch_dtype(dtype)
    resolved = resolve_weights(weights, cuda_available=torch_device.type == "cuda")

    if resolved.kind == "preset":
        try:
            source = str(ensure_preset(resolved.spec, Path(cache_dir)))
        except OSError as exc:
            raise WeightsError(
                f"Could not build the '{resolved.spec}' preset in '{cache_dir}' "
                f"({short_cause(exc)}). Make the cache directory writable, with about 100 MB "
                "free, or choose other weights. " + HOW_TO_CHOOSE
            ) from exc
        pipe = _from_pretrained(
            source,
            torch_dtype,
            local_only=True,
            what=resolved.spec,
            hint=f"Delete '{source}' to have it rebuilt.",
        )
    elif resolved.kind == "directory":
        check_directory(resolved.spec)
        source = resolved.spec
        pipe = _from_pretrained(source, torch_dtype, local_only=True, what=source)
    else:
        source = resolved.spec
        reason = probe_hub(source)
        pipe = _from_pretrained(
            source, torch_dtype, local_only=reason is not None, what=source, offline=reason
        )

    from .tokenizer import TokenizerError, check_prompt_template

    try:
        check_prompt_template(pipe.tokenizer, pipe)
    except TokenizerError as exc:
        raise WeightsError(
            f"Weights '{resolved.spec}' loaded, but their tokenizer does not fit the Krea 2 "
            f"prompt template ({exc}). " + HOW_TO_CHOOSE
        ) from exc

    pipe.to(torch_device)
    pipe.set_progress_bar_config(disable=True)
    options = options or EngineOptions()
    try:
        speedups.apply(pipe, options, str(torch_device))
    except speedups.OptionError as exc:
        raise WeightsError(str(exc)) from exc
    return LoadedPipeline(
        pipe,
        weights=resolved,
        device=str(torch_device),
        dtype=torch_dtype,
        source=source,
        options=options,
    )


def _from_pretrained(
    source: str,
    torch_dtype: Any,
    *,
    local_only: bool,
    what: str,
    offline: str | None = None,
    hint: str = "",
) -> Any:
    from diffusers import Krea2Pipeline

    components = _local_components(source) if Path(source).is_dir() else {}
    try:
        return Krea2Pipeline.from_pretrained(
            source, dtype=torch_dtype, local_files_only=local_only, **components
        )
    except Exception as exc:
        if offline is not None:
            from huggingface_hub import constants

            message = (
                f"Could not load weights '{what}' from the Hugging Face Hub: the hub is not "
                f"reachable ({offline}) and the weights are not in the local Hugging Face "
                f"cache ({constants.HF_HUB_CACHE}). Use --weights tiny-random to run with "
                "random weights, give a local directory holding a Krea2Pipeline, or make the "
                "hub reachable (network access, HF_HUB_OFFLINE unset) so the weights (about "
                "35 GB) can be downloaded once."
            )
        else:
            message = (
                f"Could not load weights '{what}' as a Krea2Pipeline ({short_cause(exc)}). "
                + (hint + " " if hint else "")
                + HOW_TO_CHOOSE
            )
        raise WeightsError(message) from exc


def _local_components(source: str) -> dict[str, Any]:
    """The components loaded here rather than by diffusers: the tokenizer, which
    `tokenizer_files` loads in about half the CPU time (the same tokenizer). Empty when it
    cannot, so that `from_pretrained` loads it and reports any error in the folder."""
    from .tokenizer_files import load_tokenizer

    try:
        tokenizer = load_tokenizer(source)
    except Exception:  # a damaged folder: from_pretrained meets it again and says what is wrong
        return {}
    return {} if tokenizer is None else {"tokenizer": tokenizer}
