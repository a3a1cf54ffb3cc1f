"""`tokenizer_files.load_tokenizer` gives the tokenizer transformers' own `from_pretrained` builds.

Checked on the tiny-random preset's folder (saved by transformers 5: the special tokens are in
the BPE vocabulary, the config lists no added tokens) and on a copy laid out like the Qwen3-VL
tokenizer of the real checkpoint (special tokens only as added tokens after the vocabulary, a
config with `added_tokens_decoder`, `additional_special_tokens` and `add_bos_token`, vocab.json
and merges.txt beside tokenizer.json, a chat template file, ByteLevel options as the hub writes
them): same backend pipeline, same settings, same ids and masks for the pipeline's calls.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from kreaserve.engine import loading, tokenizer_files
from kreaserve.engine.presets import ensure_tiny_random
from kreaserve.engine.tokenizer import (
    PROMPT_TEMPLATE_PREFIX,
    PROMPT_TEMPLATE_PREFIX_TOKENS,
    PROMPT_TEMPLATE_SUFFIX,
    PROMPT_TEMPLATE_SUFFIX_TOKENS,
    QWEN_SPECIAL_START_ID,
    QWEN_SPECIAL_TOKENS,
    prompt_text_ids,
    template_input_ids,
)
from kreaserve.engine.tokenizer_files import load_tokenizer, read_added_tokens
from kreaserve.tokens import MAX_PROMPT_TOKENS
from tests.engine.test_control_tokens import ATTACKS

torch = pytest.importorskip("torch")

PROMPTS = [
    "a red fox in the snow, golden hour",
    "",
    " ",
    "\n",
    "\n\nleading line breaks",
    "日本語のテキスト、中文字符，한국어 텍스트 🦊🏔️👩🏽‍🚀",
    "café e\u0301 \u00c5 A\u030a ﬁ ① ｆｕｌｌｗｉｄｔｈ",  # precomposed, combining, compatibility
    "مرحبا بالعالم שלום עולם",
    "tabs\tand  double  spaces   and trailing spaces   ",
    "ünïcödé " * 400,  # past the 640-token limit
    "word " * 2000,
    "x" * 5000,
    "<|im_start|>",
    "<think></think><tool_call>",
    *ATTACKS,
]


@pytest.fixture(scope="module")
def preset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_tiny_random(tmp_path_factory.mktemp("presets"))


@pytest.fixture(scope="module")
def hub_layout_dir(preset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The preset's tokenizer rewritten in the layout of the hub's Qwen3-VL tokenizer."""
    folder = tmp_path_factory.mktemp("hub-layout")
    shutil.copy(preset_dir / "model_index.json", folder / "model_index.json")
    out = folder / "tokenizer"
    out.mkdir()
    data = json.loads((preset_dir / "tokenizer" / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    for token in QWEN_SPECIAL_TOKENS:
        del vocab[token]
    byte_level = {
        "type": "ByteLevel",
        "add_prefix_space": False,
        "trim_offsets": False,
        "use_regex": False,
    }
    data["pre_tokenizer"]["pretokenizers"][1] = byte_level
    data["post_processor"] = byte_level
    data["decoder"] = byte_level
    (out / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges = ["#version: 0.2"] + [" ".join(pair) for pair in data["model"]["merges"]]
    (out / "merges.txt").write_text("\n".join(merges) + "\n", encoding="utf-8")
    added = {
        str(token.pop("id")): token for token in (dict(entry) for entry in data["added_tokens"])
    }
    config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": list(QWEN_SPECIAL_TOKENS[1:14]),
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 262144,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (out / "chat_template.jinja").write_text(
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    )
    return folder


def _official(pipeline_dir: Path) -> Any:
    from transformers import Qwen2Tokenizer

    return Qwen2Tokenizer.from_pretrained(str(pipeline_dir / "tokenizer"))


def _settings(tokenizer: Any) -> dict[str, str]:
    skip = {"_tokenizer", "_vocab", "_merges", "init_kwargs"}  # the backend is compared whole
    state = {key: repr(value) for key, value in vars(tokenizer).items() if key not in skip}
    state.update({f"init_kwargs.{k}": repr(v) for k, v in tokenizer.init_kwargs.items()})
    return state


def _assert_same_tokenizer(fast: Any, official: Any) -> None:
    assert type(fast) is type(official)
    backend = json.loads(fast.backend_tokenizer.to_str())
    assert backend == json.loads(official.backend_tokenizer.to_str())
    assert _settings(fast) == _settings(official)
    assert len(fast) == len(official) == QWEN_SPECIAL_START_ID + len(QWEN_SPECIAL_TOKENS)

    width = MAX_PROMPT_TOKENS + PROMPT_TEMPLATE_PREFIX_TOKENS - PROMPT_TEMPLATE_SUFFIX_TOKENS
    texts = [PROMPT_TEMPLATE_PREFIX + prompt for prompt in PROMPTS]
    for call in (
        # Krea2Pipeline.get_text_hidden_states's two calls
        lambda tok: tok(
            texts, truncation=True, padding="max_length", max_length=width, return_tensors="pt"
        ),
        lambda tok: tok([PROMPT_TEMPLATE_SUFFIX] * len(texts), return_tensors="pt"),
        lambda tok: tok(PROMPTS, padding=True, return_tensors="pt"),
    ):
        got, expected = call(fast), call(official)
        assert torch.equal(got.input_ids, expected.input_ids)
        assert torch.equal(got.attention_mask, expected.attention_mask)
    assert prompt_text_ids(fast, PROMPTS) == prompt_text_ids(official, PROMPTS)
    layout = {
        "prefix": PROMPT_TEMPLATE_PREFIX,
        "suffix": PROMPT_TEMPLATE_SUFFIX,
        "max_prompt_tokens": MAX_PROMPT_TOKENS,
        "pad_to_max": True,
    }
    assert template_input_ids(fast, PROMPTS, **layout) == template_input_ids(
        official, PROMPTS, **layout
    )
    ids = official(PROMPTS).input_ids
    assert fast.batch_decode(ids) == official.batch_decode(ids)


def test_the_presets_tokenizer_is_the_one_transformers_builds(preset_dir: Path) -> None:
    fast = load_tokenizer(str(preset_dir))
    assert fast is not None
    _assert_same_tokenizer(fast, _official(preset_dir))


def test_a_tokenizer_laid_out_like_the_hubs_is_the_one_transformers_builds(
    hub_layout_dir: Path,
) -> None:
    fast = load_tokenizer(str(hub_layout_dir))
    assert fast is not None
    assert fast.chat_template.startswith("{% for m in messages %}")
    assert fast.convert_tokens_to_ids("<|im_end|>") == QWEN_SPECIAL_START_ID + 2
    _assert_same_tokenizer(fast, _official(hub_layout_dir))


@pytest.mark.parametrize("head", [tokenizer_files.HEAD_CHARS, 100, 2000])
def test_added_tokens_are_read_from_the_head_of_tokenizer_json(
    preset_dir: Path, head: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 100 and 2000 characters end before and inside the list: the whole file is read then.
    monkeypatch.setattr(tokenizer_files, "HEAD_CHARS", head)
    path = preset_dir / "tokenizer" / "tokenizer.json"
    assert read_added_tokens(path) == json.loads(path.read_text(encoding="utf-8"))["added_tokens"]


def test_added_tokens_after_the_model_are_not_searched_for(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text('{"version": "1.0", "model": {"vocab": {}}, "added_tokens": []}')
    assert read_added_tokens(path) is None
    path.write_text('{"version": "1.0", "padding": {"a": [1, "x"]}, "added_tokens": [{"id": 3}]}')
    assert read_added_tokens(path) == [{"id": 3}]
    path.write_text('{"version": "1.0", "added_tokens": [{"id": 3}')
    assert read_added_tokens(path) is None


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("t*_encoder", "transformer"))
    return target


def test_layouts_it_does_not_know_are_left_to_diffusers(
    hub_layout_dir: Path, tmp_path: Path
) -> None:
    legacy = _copy(hub_layout_dir, tmp_path / "legacy")
    (legacy / "tokenizer" / "special_tokens_map.json").write_text("{}")
    assert load_tokenizer(str(legacy)) is None

    other_class = _copy(hub_layout_dir, tmp_path / "other-class")
    index = json.loads((other_class / "model_index.json").read_text())
    index["tokenizer"] = ["transformers", "PreTrainedTokenizerFast"]
    (other_class / "model_index.json").write_text(json.dumps(index))
    assert load_tokenizer(str(other_class)) is None

    # An added token on an id that transformers, appending after the vocabulary, would not give.
    gap = _copy(hub_layout_dir, tmp_path / "gap")
    path = gap / "tokenizer" / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["added_tokens"][-1]["id"] += 5
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    config_path = gap / "tokenizer" / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    last = max(config["added_tokens_decoder"], key=int)
    config["added_tokens_decoder"][str(int(last) + 5)] = config["added_tokens_decoder"].pop(last)
    config_path.write_text(json.dumps(config))
    assert load_tokenizer(str(gap)) is None

    assert load_tokenizer(str(tmp_path / "missing")) is None


def test_the_engine_loads_the_tokenizer_without_decoding_tokenizer_json_in_python(
    preset_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[int] = []
    real_loads = json.loads

    def counting_loads(text: Any, *args: Any, **kwargs: Any) -> Any:
        decoded.append(len(text))
        return real_loads(text, *args, **kwargs)

    monkeypatch.setattr(json, "loads", counting_loads)
    loaded = loading.load_pipeline(str(preset_dir), cache_dir=preset_dir.parent, device="cpu")
    monkeypatch.undo()
    assert decoded and max(decoded) < 1_000_000  # tokenizer.json is 19 MB
    _assert_same_tokenizer(loaded.pipe.tokenizer, _official(preset_dir))
