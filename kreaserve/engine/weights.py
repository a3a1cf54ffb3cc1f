"""Which weights a spec means ("auto", a preset, a local directory, a Hugging Face repo id)
and the checks that turn a wrong one into a `WeightsError` that says what to do.

Importing it is cheap: torch and huggingface_hub are imported inside the functions.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .presets import PRESETS

#: What "auto" means with a GPU: the open turbo checkpoint on the Hugging Face Hub.
AUTO_CUDA_WEIGHTS = "krea/Krea-2-Turbo"
#: What "auto" means without one: random weights that run anywhere.
AUTO_CPU_WEIGHTS = "tiny-random"
HUB_PROBE_TIMEOUT_S = 4.0

_DTYPES = {
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
    "fp32": "float32",
    "float32": "float32",
    "float": "float32",
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
HOW_TO_CHOOSE = (
    "Choose weights with --weights or the KREASERVE_WEIGHTS environment variable: "
    "'tiny-random' or 'mid-random' (random weights, run anywhere, images are noise), a local "
    "directory holding a Krea2Pipeline saved with save_pretrained, or a Hugging Face repo id "
    f"such as '{AUTO_CUDA_WEIGHTS}' (needs the hub to be reachable or the weights in the local "
    "Hugging Face cache)."
)


class WeightsError(Exception):
    """The requested weights cannot be found or loaded; the message says why and what to do."""


@dataclass(frozen=True)
class ResolvedWeights:
    """What a weights spec means. `kind` is "preset", "directory" or "hub"."""

    spec: str
    kind: str
    is_random: bool
    warning: str | None = None


def resolve_weights(spec: str, *, cuda_available: bool) -> ResolvedWeights:
    """Say what the weights spec `spec` refers to, without loading anything.

    "auto" is the hub's Krea 2 Turbo with CUDA and the "tiny-random" preset without (with a
    warning). Preset names are presets; an existing directory, or anything that looks like a
    path, is a directory; "owner/name" is a hub repo id.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise WeightsError("No weights were given. " + HOW_TO_CHOOSE)
    spec = spec.strip()
    if spec == "auto":
        if cuda_available:
            return ResolvedWeights(AUTO_CUDA_WEIGHTS, "hub", is_random=False)
        return ResolvedWeights(
            AUTO_CPU_WEIGHTS,
            "preset",
            is_random=True,
            warning=(
                "No GPU found, so weights 'auto' fell back to 'tiny-random': random weights, "
                "every image is noise. This is for trying the service, not for real images. "
                + HOW_TO_CHOOSE
            ),
        )
    if spec in PRESETS:
        return ResolvedWeights(
            spec,
            "preset",
            is_random=True,
            warning=(
                f"Weights '{spec}' are random: every image is noise. For real images use "
                f"--weights (or KREASERVE_WEIGHTS) with '{AUTO_CUDA_WEIGHTS}' or a local "
                "directory holding a Krea2Pipeline."
            ),
        )
    path = Path(spec).expanduser()
    looks_like_path = spec.startswith((".", "/", "~")) or os.sep in spec.replace("/", "", 1)
    if path.exists() or looks_like_path or not _HUB_ID.match(spec):
        return ResolvedWeights(str(path), "directory", is_random=False)
    return ResolvedWeights(spec, "hub", is_random=False)


def to_torch_dtype(dtype: str | None) -> Any:
    import torch

    name = _DTYPES.get((dtype or "bf16").lower())
    if name is None:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(sorted(_DTYPES))}")
    return getattr(torch, name)


def short_cause(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def probe_hub(repo_id: str) -> str | None:
    """Ask the hub about `repo_id` with a short timeout; None when it answered that it has it.

    Returns why the hub counts as unreachable (offline mode, no answer, a connection or server
    error). Raises `WeightsError` when the hub answered that the repo is missing or gated.
    A TCP connect is no proof (some sandboxes accept every connection and then reset it), so
    this is a real API request, bounded by a thread join (name resolution ignores timeouts).
    """
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"

    outcome: list[BaseException | None] = []

    def probe() -> None:
        try:
            HfApi(endpoint=constants.ENDPOINT).model_info(repo_id, timeout=HUB_PROBE_TIMEOUT_S)
            outcome.append(None)
        except Exception as exc:  # reported below, never raised from the thread
            outcome.append(exc)

    thread = threading.Thread(target=probe, name="kreaserve-hub-probe", daemon=True)
    thread.start()
    thread.join(HUB_PROBE_TIMEOUT_S + 1.0)
    if not outcome:
        return f"no answer from {constants.ENDPOINT} within {HUB_PROBE_TIMEOUT_S:g} s"
    exc = outcome[0]
    if exc is None:
        return None
    if isinstance(exc, RepositoryNotFoundError | RevisionNotFoundError):
        raise WeightsError(
            f"Could not load weights '{repo_id}': the Hugging Face Hub has no such repository, "
            "or it is gated or private and needs a token with access (set HF_TOKEN or run "
            f"`hf auth login`) ({short_cause(exc)}). " + HOW_TO_CHOOSE
        ) from exc
    return f"{constants.ENDPOINT} did not answer: {short_cause(exc)}"


def check_directory(spec: str) -> None:
    path = Path(spec)
    if not path.exists():
        what = "the directory does not exist"
        if "/" not in str(spec):
            what = (
                f"it is neither a preset ({', '.join(sorted(PRESETS))}), an existing directory "
                "nor a Hugging Face repo id (owner/name)"
            )
        raise WeightsError(f"Could not load weights from '{spec}': {what}. " + HOW_TO_CHOOSE)
    if not path.is_dir():
        raise WeightsError(
            f"Could not load weights from '{path}': it is a file, not a directory. " + HOW_TO_CHOOSE
        )
    index = path / "model_index.json"
    try:
        class_name = json.loads(index.read_text()).get("_class_name")
    except FileNotFoundError:
        raise WeightsError(
            f"Could not load weights from '{path}': it does not contain a diffusers pipeline "
            "(no model_index.json). " + HOW_TO_CHOOSE
        ) from None
    except (OSError, ValueError, AttributeError) as exc:
        raise WeightsError(
            f"Could not load weights from '{path}': its model_index.json is unreadable "
            f"({short_cause(exc)}). " + HOW_TO_CHOOSE
        ) from exc
    if class_name != "Krea2Pipeline":
        raise WeightsError(
            f"Could not load weights from '{path}': it holds a {class_name or 'unknown'} pipeline, "
            "not a Krea2Pipeline. " + HOW_TO_CHOOSE
        )
