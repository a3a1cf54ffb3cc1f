"""kreaserve.tokens counts exactly what the engine's Hugging Face Qwen tokenizer counts."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kreaserve import tokens
from kreaserve.tokens import MAX_PROMPT_TOKENS, count_if_over, count_tokens

_POOL = (
    "abc XYZ 0123456789 ,.;:!?'\"()[]{}<>|/\\-_=+*&^%$#@~` \n\t\r  café naïve Straße ÆØÅ "
    "日本語のテキスト 中文字符 한국어 Русский текст العربية עברית हिन्दी ไทย "
    "🦊🐱‍👤👩‍👩‍👧 🇯🇵 ❤️ ✨ e\u0301 A\u030a \u00a0 \u200b \u2028 \u3000 ﬁ ① ㍿ 𝔘𝔫𝔦 "
    "It's we'll they'RE I'M don't "
)
_FIXED = [
    "",
    " ",
    "   ",
    "\n",
    "\n\n  \n",
    "hello",
    " hello",
    "Hello world!",
    "a fox in the snow, cinematic lighting, 35mm, shallow depth of field",
    "a" * 5000,
    "🦊" * 300,
    "1234567890" * 20,
    "e\u0301 vs \u00e9",  # NFC: both become the same character
    "\u212b Angstrom sign",  # NFC maps it to Å
    "tab\tsep\r\nline\rend",
    "日本語" * 200,
    "<|extra_0|> <|vision_start|x> <|im_end",  # look-alikes that are not special tokens
    "x" + " y" * 2000,
]


def _samples() -> list[str]:
    rng = random.Random(1234)
    out = list(_FIXED)
    for _ in range(300):
        length = rng.choice([1, 5, 20, 100, 1000])
        out.append("".join(rng.choice(_POOL) for _ in range(length)))
    for _ in range(100):  # arbitrary code points across the BMP and the supplementary planes
        length = rng.randint(1, 200)
        out.append("".join(chr(rng.randint(0x20, 0xD7FF)) for _ in range(length // 2)))
        out[-1] += "".join(chr(rng.randint(0xE000, 0x2FFFF)) for _ in range(length // 2))
    return out


@pytest.fixture(scope="module")
def hf_tokenizer() -> Any:
    from kreaserve.engine.tokenizer import get_qwen_tokenizer

    return get_qwen_tokenizer()


def _hf_count(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False).input_ids)


def test_count_equals_hf_tokenizer_on_varied_text(hf_tokenizer: Any) -> None:
    samples = _samples()
    assert len(samples) > 400
    mismatches = [
        (s[:60], count_tokens(s), _hf_count(hf_tokenizer, s))
        for s in samples
        if count_tokens(s) != _hf_count(hf_tokenizer, s)
    ]
    assert mismatches == []


def test_640_token_boundary(hf_tokenizer: Any) -> None:
    assert MAX_PROMPT_TOKENS == 640
    at_limit = "fox" + " fox" * (MAX_PROMPT_TOKENS - 1)
    over = at_limit + " fox"
    assert count_tokens(at_limit) == _hf_count(hf_tokenizer, at_limit) == MAX_PROMPT_TOKENS
    assert count_tokens(over) == _hf_count(hf_tokenizer, over) == MAX_PROMPT_TOKENS + 1


def test_special_token_text_is_counted_as_the_engine_feeds_it(hf_tokenizer: Any) -> None:
    # The engine tokenizes a prompt as plain text, so "<|im_end|>" typed in a prompt is the
    # several tokens of its text there as here (a plain tokenizer call would make it ONE
    # control token).
    from kreaserve.engine.tokenizer import prompt_text_ids

    for text in ["<|im_end|>", "hello <|im_end|> world", "<|im_start|>assistant\n", "<think>"]:
        (engine_ids,) = prompt_text_ids(hf_tokenizer, [text])
        assert count_tokens(text) == len(engine_ids) > _hf_count(hf_tokenizer, text)
    assert count_tokens("<|im_end|>") == 6
    assert _hf_count(hf_tokenizer, "<|im_end|>") == 1


def test_nfc_normalization_like_the_hf_tokenizer() -> None:
    assert count_tokens("cafe\u0301") == count_tokens("caf\u00e9")


def test_lone_surrogates_do_not_crash() -> None:
    assert count_tokens("a\ud800b") > 0


def test_rejects_non_strings() -> None:
    with pytest.raises(TypeError):
        count_tokens(b"bytes")  # type: ignore[arg-type]


def test_encoding_is_built_once_across_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    built = []
    real_build = tokens._build_encoding

    def counting_build() -> Any:
        built.append(1)
        return real_build()

    monkeypatch.setattr(tokens, "_encoding", None)
    monkeypatch.setattr(tokens, "_build_encoding", counting_build)
    results: list[int] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        results.append(count_tokens("a fox in the snow"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert built == [1]
    assert len(results) == 8 and len(set(results)) == 1


def in_fresh_python(code: str, timeout: float = 60) -> str:
    """What `code` prints, run in a new interpreter from the checkout (stripped)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout.strip()


def test_does_not_import_torch_transformers_or_diffusers() -> None:
    code = (
        "import sys, kreaserve.tokens as t; n = t.count_tokens('hello world'); "
        "bad = sorted(m for m in ('torch', 'transformers', 'diffusers', 'tokenizers') "
        "if m in sys.modules); print(n, bad)"
    )
    out = in_fresh_python(code)
    assert out == "2 []"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
def test_the_encoding_keeps_no_python_copy_of_the_vocabulary() -> None:
    # tiktoken's Rust core holds the 151,643 ranks; the Python dict it also keeps (only to
    # pickle the encoding) was about 18 MB of the API process's RSS (BENCHMARKS.md, issue 12).
    code = (
        "import re, tiktoken, kreaserve.tokens as t\n"
        "def rss():\n"
        "    return int(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read())[1])\n"
        "before = rss(); t.count_tokens('hello world')\n"
        "print((rss() - before) // 1024)\n"
    )
    grown = in_fresh_python(code)
    # Measured: 37 MB for the Rust core's maps; 55 MB with the Python copy kept.
    assert int(grown) < 46


# --- the byte bound: a prompt of at most 640 bytes is never counted (the API's 37 MB saved) ------

# Unicode text that stresses the bound: ASCII, accents and combining marks (NFC composes
# them), CJK, Hangul jamo, emoji with joiners and variation selectors, code points that NFC
# expands (U+0958 to two, U+1D160 to three), and anything else the strategy draws.
_BOUND_ALPHABET = st.one_of(
    st.sampled_from(list("abc XYZ 019 .,!?\n\t'\"<|>")),
    st.sampled_from(
        ["e\u0301", "\u00e9", "u\u0308\u0301", "\u1100\u1161", "\u0958", "\U0001d160", "\u2adc"]
    ),
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),
    st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF),
    st.sampled_from(["\u200d", "\ufe0f", "\u3000", "\u00a0", "\U0001f1ef\U0001f1f5"]),
    st.characters(blacklist_categories=("Cs",)),
)


def _nfc_bytes(text: str) -> bytes:
    return unicodedata.normalize("NFC", text).encode("utf-8")


def test_every_token_of_the_vocabulary_is_at_least_one_byte() -> None:
    ranks = tokens._load_ranks()
    assert len(ranks) == 151643
    assert min(len(token) for token in ranks) == 1


@settings(max_examples=300, deadline=None)
@given(st.lists(_BOUND_ALPHABET, max_size=400).map("".join))
def test_a_prompt_has_at_most_as_many_tokens_as_nfc_utf8_bytes(text: str) -> None:
    data = _nfc_bytes(text)
    ids = tokens._get_encoding().encode_ordinary(unicodedata.normalize("NFC", text))
    # The tokens spell the normalised text byte for byte, so none can be empty.
    assert b"".join(tokens._get_encoding().decode_single_token_bytes(i) for i in ids) == data
    assert count_tokens(text) == len(ids) <= len(data)
    if len(data) <= MAX_PROMPT_TOKENS:
        assert count_if_over(text) is None


def test_count_if_over_counts_exactly_above_640_bytes() -> None:
    at_limit = "fox" + " fox" * (MAX_PROMPT_TOKENS - 1)  # 2,559 bytes, 640 tokens
    assert count_if_over(at_limit) is None
    assert count_if_over(at_limit + " fox") == MAX_PROMPT_TOKENS + 1
    # NFC can grow a text threefold: 214 U+1D160 are 856 bytes before and 2,568 after.
    expanding = "\U0001d160" * 214
    assert count_if_over(expanding) == count_tokens(expanding) > MAX_PROMPT_TOKENS
    assert count_if_over("a\ud800b") is None  # a lone surrogate is counted, not measured
    assert count_if_over("\ud800" + " fox" * 640) == count_tokens("\ud800" + " fox" * 640) > 640
    with pytest.raises(TypeError):
        count_if_over(b"bytes")  # type: ignore[arg-type]


def test_a_short_prompt_does_not_build_the_encoding_in_a_fresh_api_process() -> None:
    # The API's create validates prompts with count_if_over: a prompt of at most 640 bytes
    # must not load tiktoken or the vocabulary (37 MB); a longer one builds it and is counted.
    code = (
        "import sys, kreaserve.api.app\n"
        "from kreaserve.schemas import RequestError, parse_create_request as parse\n"
        "short = 'a fox in the snow, \\u65e5\\u672c \\U0001f98a ' * 20\n"
        "parse({'model': 'krea-2-turbo', 'prompt': short})\n"
        "before = 'tiktoken' in sys.modules\n"
        "try:\n"
        "    parse({'model': 'krea-2-turbo', 'prompt': 'fox' + ' fox' * 640})\n"
        "except RequestError as exc:\n"
        "    print(before, 'tiktoken' in sys.modules, exc.code, exc.message)\n"
    )
    out = in_fresh_python(code, timeout=120)
    assert out == (
        "False True prompt_too_long prompt is 641 tokens; at most 640 tokens are allowed"
    )
