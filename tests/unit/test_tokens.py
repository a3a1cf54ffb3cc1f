"""kreaserve.tokens counts exactly what the engine's Hugging Face Qwen tokenizer counts."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from kreaserve import tokens
from kreaserve.tokens import MAX_PROMPT_TOKENS, count_tokens

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


def test_does_not_import_torch_transformers_or_diffusers() -> None:
    code = (
        "import sys, kreaserve.tokens as t; n = t.count_tokens('hello world'); "
        "bad = sorted(m for m in ('torch', 'transformers', 'diffusers', 'tokenizers') "
        "if m in sys.modules); print(n, bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout.strip()
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
    grown = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout.strip()
    # Measured: 37 MB for the Rust core's maps; 55 MB with the Python copy kept.
    assert int(grown) < 46
