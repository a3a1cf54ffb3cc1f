"""Load a pipeline folder's Qwen2 tokenizer with one parse of its 19 MB `tokenizer.json`.

`Qwen2Tokenizer.from_pretrained` (transformers 5) decodes `tokenizer.json` with Python's json
module up to twice (for its added tokens when `tokenizer_config.json` lists none, then for the
vocabulary and merges, which its `__init__` turns back into a Rust BPE): about 1 s of CPU per
engine start. `load_tokenizer(folder)` runs the same `from_pretrained` (every setting from
`tokenizer_config.json`, chat templates, special tokens) but reads the added tokens from the
head of the file and lets the `tokenizers` library load the file itself, as transformers does
for tokenizer classes without their own `__init__`. It then sets the normalizer, pre-tokenizer
and decoder that `Qwen2Tokenizer.__init__` would have built, so the result is the tokenizer
transformers builds; tests/engine/test_tokenizer_files.py compares the two.

It returns None for a folder it does not understand (another tokenizer class, legacy
`added_tokens.json` or `special_tokens_map.json`, other BPE options, added tokens that do not
land on the ids and options the files give them); diffusers then loads the tokenizer as usual.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["load_tokenizer", "read_added_tokens"]

_QWEN2_CLASS_NAMES = ("Qwen2Tokenizer", "Qwen2TokenizerFast")
_LEGACY_FILES = ("added_tokens.json", "special_tokens_map.json")
_BPE_OPTIONS = (
    "dropout",
    "unk_token",
    "continuing_subword_prefix",
    "end_of_word_suffix",
    "fuse_unk",
    "byte_fallback",
    "ignore_merges",
)
#: How much of tokenizer.json is read first to find the added tokens (Qwen's take 4 KB).
HEAD_CHARS = 1 << 16
_ADDED_TOKEN_FIELDS = ("content", "single_word", "lstrip", "rstrip", "normalized", "special")
_SPACE = re.compile(r"\s*")


def read_added_tokens(tokenizer_json: Path) -> list[dict[str, Any]] | None:
    """The top-level `added_tokens` list of a `tokenizer.json`, decoded without the rest.

    The `tokenizers` library writes it before the normalizer and the model, so only the small
    values in front of it are decoded, and only the file's head is read when it holds them.
    None if it does not come before `model`.
    """
    with tokenizer_json.open(encoding="utf-8") as handle:
        text = handle.read(HEAD_CHARS)
        if len(text) == HEAD_CHARS:
            tokens = _added_tokens_or_none(text)
            if tokens is not None:
                return tokens
            text += handle.read()  # cut short inside or before the list
    return _added_tokens_or_none(text)


def _added_tokens_or_none(text: str) -> list[dict[str, Any]] | None:
    try:
        return _added_tokens(text)
    except ValueError:  # not JSON (or cut short): left to from_pretrained, which says so
        return None


def _added_tokens(text: str) -> list[dict[str, Any]] | None:
    decode = json.JSONDecoder().raw_decode
    at = _skip_space(text, 0)
    if text[at : at + 1] != "{":
        return None
    at += 1
    while True:
        at = _skip_space(text, at)
        key, at = decode(text, at)
        at = _skip_space(text, at)
        if not isinstance(key, str) or text[at : at + 1] != ":":
            return None
        at = _skip_space(text, at + 1)
        if key == "model":
            return None
        value, at = decode(text, at)
        if key == "added_tokens":
            return value if isinstance(value, list) else None
        at = _skip_space(text, at)
        if text[at : at + 1] != ",":
            return None
        at += 1


def _skip_space(text: str, at: int) -> int:
    match = _SPACE.match(text, at)
    return match.end() if match else at


def load_tokenizer(pipeline_dir: str) -> Any | None:
    """The `tokenizer` component of the Krea2Pipeline saved in `pipeline_dir`, or None.

    None means the folder's tokenizer is not one this module loads; the caller then leaves it
    to `Krea2Pipeline.from_pretrained`. Called as diffusers calls it (same path, no options),
    so even `name_or_path` and `init_kwargs` come out the same.
    """
    folder = Path(pipeline_dir) / "tokenizer"
    config = _tokenizer_config(Path(pipeline_dir))
    if config is None or any((folder / name).exists() for name in _LEGACY_FILES):
        return None
    from transformers import Qwen2Tokenizer

    added = read_added_tokens(folder / "tokenizer.json")
    if added is None:
        return None
    declared = _added_fields({token["id"]: token for token in added})
    kwargs: dict[str, Any] = {}
    if "added_tokens_decoder" not in config:
        # What from_pretrained would decode the whole tokenizer.json for (its legacy branch).
        kwargs["added_tokens_decoder"] = declared
    elif _added_fields(config["added_tokens_decoder"]) != declared:
        return None
    tokenizer = _rust_file_class().from_pretrained(
        os.path.join(pipeline_dir, "tokenizer"), **kwargs
    )
    tokenizer.__class__ = Qwen2Tokenizer  # what diffusers records and checks
    loaded = {i: token.__getstate__() for i, token in tokenizer.added_tokens_decoder.items()}
    if _added_fields(loaded) != declared:
        return None  # ids the file asks for but that adding the tokens in order does not give
    return tokenizer if _match_qwen2_init(tokenizer) else None


def _added_fields(tokens: dict[Any, Any]) -> dict[int, dict[str, Any]]:
    """Added tokens as {id: {content, lstrip, ...}}, the form both files and AddedToken give."""
    if not isinstance(tokens, dict):
        return {}
    return {
        int(i): {key: token.get(key) for key in _ADDED_TOKEN_FIELDS}
        for i, token in tokens.items()
        if isinstance(token, dict)
    }


def _tokenizer_config(pipeline_dir: Path) -> dict[str, Any] | None:
    """`tokenizer/tokenizer_config.json` when the pipeline's tokenizer is a plain Qwen2Tokenizer."""
    try:
        index = json.loads((pipeline_dir / "model_index.json").read_text())
        folder = pipeline_dir / "tokenizer"
        config = json.loads((folder / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return None
    entry = index.get("tokenizer") if isinstance(index, dict) else None
    if not isinstance(entry, list) or len(entry) != 2 or entry[0] != "transformers":
        return None
    if entry[1] not in _QWEN2_CLASS_NAMES or not isinstance(config, dict):
        return None
    if config.get("tokenizer_class") not in _QWEN2_CLASS_NAMES or "fast_tokenizer_files" in config:
        return None
    if not (folder / "tokenizer.json").is_file():
        return None
    return config


def _match_qwen2_init(tokenizer: Any) -> bool:
    """Give `tokenizer` the pipeline pieces `Qwen2Tokenizer.__init__` builds in code.

    transformers takes only the vocabulary, merges, post-processor, padding and truncation from
    tokenizer.json, and builds the BPE model, normalizer, pre-tokenizer and decoder itself. False
    when the file's BPE options differ from those it would build.
    """
    from transformers import Qwen2Tokenizer

    reference = Qwen2Tokenizer(add_prefix_space=tokenizer.init_kwargs.get("add_prefix_space"))
    backend, built = tokenizer.backend_tokenizer, reference.backend_tokenizer
    if type(backend.model) is not type(built.model):
        return False
    if any(getattr(backend.model, o) != getattr(built.model, o) for o in _BPE_OPTIONS):
        return False
    backend.normalizer = built.normalizer
    backend.pre_tokenizer = built.pre_tokenizer
    backend.decoder = built.decoder
    return True


@functools.cache
def _rust_file_class() -> Any:
    from transformers import Qwen2Tokenizer

    class RustFileQwen2Tokenizer(Qwen2Tokenizer):
        """Qwen2Tokenizer whose `from_pretrained` leaves tokenizer.json to `tokenizers`."""

        @classmethod
        def convert_to_native_format(cls, trust_remote_code: bool = False, **kwargs: Any) -> Any:
            # Keeping `tokenizer_file` makes TokenizersBackend.__init__ load it with
            # tokenizers.Tokenizer.from_file instead of a Python vocabulary and merge list.
            return kwargs

    return RustFileQwen2Tokenizer
