"""The engine: presets, loading through Krea2Pipeline.from_pretrained, generation, cancellation."""

from __future__ import annotations

import ast
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kreaserve.engine import presets
from kreaserve.engine.pipeline import (
    Engine,
    GenerateRequest,
    GenerationCancelled,
    WeightsError,
    resolve_weights,
)
from kreaserve.engine.presets import MARKER_FILE, ensure_preset, ensure_tiny_random

ENGINE_DIR = Path(__file__).resolve().parents[2] / "kreaserve" / "engine"
PROMPT = "a red fox in the snow, golden hour"


@pytest.fixture(scope="session")
def preset_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("presets")


@pytest.fixture(scope="session")
def engine(preset_cache: Path) -> Engine:
    return Engine.load("tiny-random", cache_dir=preset_cache, device="cpu")


def _pixels(image: Any) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


# --- weights resolution ----------------------------------------------------------------------


def test_resolve_auto_without_cuda_is_tiny_random_with_a_warning() -> None:
    resolved = resolve_weights("auto", cuda_available=False)
    assert (resolved.spec, resolved.kind, resolved.is_random) == ("tiny-random", "preset", True)
    assert resolved.warning and "noise" in resolved.warning
    assert "--weights" in resolved.warning and "KREASERVE_WEIGHTS" in resolved.warning


def test_resolve_auto_with_cuda_is_the_turbo_checkpoint() -> None:
    resolved = resolve_weights("auto", cuda_available=True)
    assert (resolved.spec, resolved.kind, resolved.is_random) == ("krea/Krea-2-Turbo", "hub", False)
    assert resolved.warning is None


def test_resolve_presets_directories_and_hub_ids(tmp_path: Path) -> None:
    assert resolve_weights("mid-random", cuda_available=True).kind == "preset"
    assert resolve_weights(str(tmp_path), cuda_available=False).kind == "directory"
    assert resolve_weights("./weights", cuda_available=False).kind == "directory"
    assert resolve_weights("some-owner/some.model", cuda_available=False).kind == "hub"


# --- presets -----------------------------------------------------------------------------------


def test_preset_is_built_once_and_loaded_through_from_pretrained(
    engine: Engine, preset_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffusers import Krea2Pipeline

    path = ensure_tiny_random(preset_cache)
    assert engine.info["source"] == str(path)
    assert json.loads((path / MARKER_FILE).read_text())["name"] == "tiny-random"
    assert (path / "model_index.json").is_file() and (path / "tokenizer").is_dir()
    stamp = (path / MARKER_FILE).stat().st_mtime_ns

    def no_rebuild(spec: Any) -> Any:
        raise AssertionError("the preset was rebuilt")

    monkeypatch.setattr(presets, "build_preset_pipeline", no_rebuild)
    loads: list[tuple[Any, Any]] = []
    real = Krea2Pipeline.from_pretrained.__func__  # type: ignore[attr-defined]

    def spy(cls: Any, source: Any, **kwargs: Any) -> Any:
        loads.append((source, kwargs.get("dtype")))
        return real(cls, source, **kwargs)

    monkeypatch.setattr(Krea2Pipeline, "from_pretrained", classmethod(spy))
    # "auto" without a GPU means tiny-random, loaded from the same preset directory.
    again = Engine.load("auto", cache_dir=preset_cache, device="cpu", dtype="fp32")
    assert ensure_tiny_random(preset_cache) == path
    assert (path / MARKER_FILE).stat().st_mtime_ns == stamp
    import torch

    assert loads == [(str(path), torch.float32)]
    assert again.info["dtype"] == "float32" and engine.info["dtype"] == "bfloat16"
    assert again.info["weights"] == "tiny-random" and again.info["is_random"] is True
    assert "No GPU" in again.info["warning"] and "noise" in again.info["warning"]


def test_a_damaged_preset_gives_a_weights_error_that_says_how_to_fix_it(tmp_path: Path) -> None:
    damaged = tmp_path / "tiny-random-v1"
    damaged.mkdir()
    (damaged / MARKER_FILE).write_text('{"name": "tiny-random", "version": 1}')
    (damaged / "model_index.json").write_text(
        '{"_class_name": "Krea2Pipeline", "vae": ["diffusers", "AutoencoderKLQwenImage"]}'
    )
    with pytest.raises(WeightsError, match="Delete") as caught:
        Engine.load("tiny-random", cache_dir=tmp_path, device="cpu")
    _assert_clear(str(caught.value))


def test_preset_build_is_deterministic(engine: Engine, preset_cache: Path) -> None:
    from safetensors.torch import load_file

    path = ensure_tiny_random(preset_cache)
    fresh = presets.build_preset_pipeline(presets.PRESETS["tiny-random"])
    for name, filename in [
        ("transformer", "diffusion_pytorch_model.safetensors"),
        ("vae", "diffusion_pytorch_model.safetensors"),
        ("text_encoder", "model.safetensors"),
    ]:
        saved = load_file(path / name / filename)
        built = getattr(fresh, name).state_dict()
        assert saved.keys() <= built.keys()
        for key, tensor in saved.items():
            assert built[key].equal(tensor), f"{name}.{key} differs between builds"
    tables = [p for n, p in fresh.transformer.named_parameters() if n.endswith("scale_shift_table")]
    assert tables and all(0 < float(t.detach().abs().mean()) < 1 for t in tables)


def test_concurrent_ensure_builds_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[int] = []

    class FakePipe:
        def save_pretrained(self, directory: Path, **kwargs: Any) -> None:
            (Path(directory) / "model_index.json").write_text("{}")

    def slow_build(spec: Any) -> FakePipe:
        builds.append(1)
        time.sleep(0.3)
        return FakePipe()

    monkeypatch.setattr(presets, "build_preset_pipeline", slow_build)
    # A half-written directory from an earlier crash must be replaced, not used.
    (tmp_path / "tiny-random-v1").mkdir()
    results: list[Path] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        results.append(ensure_preset("tiny-random", tmp_path))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert builds == [1]
    assert results == [tmp_path / "tiny-random-v1"] * 4
    assert (tmp_path / "tiny-random-v1" / MARKER_FILE).is_file()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".") and p.is_dir()]
    assert leftovers == []


def test_unknown_preset_name() -> None:
    with pytest.raises(ValueError, match="unknown preset"):
        ensure_preset("huge-random", Path("/nonexistent"))


# --- generation --------------------------------------------------------------------------------


def test_info(engine: Engine) -> None:
    info = engine.info
    assert info["weights"] == "tiny-random" and info["is_random"] is True
    assert info["device"] == "cpu" and info["dtype"] == "bfloat16"
    assert "noise" in info["warning"]


def test_same_seed_same_pixels_different_seed_different(engine: Engine) -> None:
    first = _pixels(engine.generate(GenerateRequest(PROMPT, 256, 256, seed=42)))
    second = _pixels(engine.generate(GenerateRequest(PROMPT, 256, 256, seed=42)))
    other = _pixels(engine.generate(GenerateRequest(PROMPT, 256, 256, seed=43)))
    assert np.array_equal(first, second)
    assert not np.array_equal(first, other)
    assert first.std() > 1  # scale_shift_table is random, so the image is not flat


@pytest.mark.parametrize(("width", "height"), [(1344, 768), (704, 1472)])
def test_output_is_exactly_the_requested_size(engine: Engine, width: int, height: int) -> None:
    image = engine.generate(GenerateRequest(PROMPT, width, height, seed=1))
    assert image.size == (width, height)
    assert image.mode == "RGB"


def test_on_step_is_called_after_every_step(engine: Engine) -> None:
    steps: list[tuple[int, int]] = []
    engine.generate(
        GenerateRequest(PROMPT, 256, 256, seed=5), on_step=lambda s, t: steps.append((s, t))
    )
    assert steps == [(i, 8) for i in range(1, 9)]


def _count_decodes(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    vae = engine.pipe.vae
    real_decode = vae.decode
    calls: list[int] = []

    def counting_decode(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(vae, "decode", counting_decode)
    return calls


def test_cancel_after_step_3_stops_and_skips_the_decode(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = GenerateRequest(PROMPT, 256, 256, seed=9)
    before = _pixels(engine.generate(request))
    decodes = _count_decodes(engine, monkeypatch)
    steps: list[int] = []
    with pytest.raises(GenerationCancelled):
        engine.generate(
            request,
            on_step=lambda s, t: steps.append(s),
            should_cancel=lambda: len(steps) >= 3,
        )
    assert steps == [1, 2, 3]
    assert decodes == []
    # The pipeline is left in a clean state: the next run is complete and identical.
    after = _pixels(engine.generate(request))
    assert decodes == [1]
    assert np.array_equal(before, after)


def test_cancel_after_the_last_step_or_before_the_start_skips_the_decode(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    decodes = _count_decodes(engine, monkeypatch)
    steps: list[int] = []
    with pytest.raises(GenerationCancelled):
        engine.generate(
            GenerateRequest(PROMPT, 256, 256, seed=9),
            on_step=lambda s, t: steps.append(s),
            should_cancel=lambda: len(steps) >= 8,
        )
    assert steps == list(range(1, 9))
    with pytest.raises(GenerationCancelled):
        engine.generate(
            GenerateRequest(PROMPT, 256, 256, seed=9),
            on_step=lambda s, t: steps.append(s),
            should_cancel=lambda: True,
        )
    assert steps == list(range(1, 9))
    assert decodes == []


@pytest.mark.parametrize(
    ("width", "height"), [(1000, 1024), (1024, 1030), (8, 16), (0, 1024), (-16, 256)]
)
def test_sizes_that_are_not_multiples_of_16_are_rejected(width: int, height: int) -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        GenerateRequest(PROMPT, width, height, seed=1)


def test_other_invalid_requests_are_rejected() -> None:
    with pytest.raises(ValueError):
        GenerateRequest(PROMPT, 256, 256, seed=-1)
    with pytest.raises(ValueError):
        GenerateRequest(PROMPT, 256, 256, seed=1, steps=0)
    with pytest.raises(TypeError):
        GenerateRequest(PROMPT, 256.0, 256, seed=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        GenerateRequest(PROMPT, 256, 256, seed=True)


def test_warmup(engine: Engine) -> None:
    assert 0 < engine.warmup() < 30


def test_the_tokenizer_fits_the_prompt_template(engine: Engine) -> None:
    from kreaserve.engine.tokenizer import check_prompt_template, get_qwen_tokenizer

    tokenizer = engine.pipe.tokenizer
    check_prompt_template(tokenizer, engine.pipe)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == 151645
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.pad_token_id == 151643
    assert tokenizer.padding_side == "right"
    assert engine.pipe.text_encoder.config.text_config.vocab_size == 151936
    # The tokenizer saved with the preset round-trips: same ids as one built offline now.
    fresh = get_qwen_tokenizer()
    for text in [PROMPT, "日本語 🦊 café <|im_end|> e\u0301", " \n\n x" * 50]:
        assert tokenizer(text).input_ids == fresh(text).input_ids


# --- weights errors ---------------------------------------------------------------------------


def _assert_clear(message: str) -> None:
    assert "Traceback" not in message and "\n" not in message
    assert "tiny-random" in message and "directory" in message


@pytest.mark.parametrize("kind", ["missing", "empty", "not-a-pipeline", "broken"])
def test_bad_directory_gives_a_clear_weights_error(
    tmp_path: Path, preset_cache: Path, kind: str
) -> None:
    target = tmp_path / "weights"
    if kind != "missing":
        target.mkdir()
    if kind == "not-a-pipeline":
        (target / "model_index.json").write_text('{"_class_name": "FluxPipeline"}')
    if kind == "broken":
        (target / "model_index.json").write_text(
            '{"_class_name": "Krea2Pipeline", "transformer": '
            '["diffusers", "Krea2Transformer2DModel"]}'
        )
    start = time.monotonic()
    with pytest.raises(WeightsError) as caught:
        Engine.load(str(target), cache_dir=preset_cache, device="cpu")
    assert time.monotonic() - start < 10
    _assert_clear(str(caught.value))
    assert str(target) in str(caught.value)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """An endpoint that accepts TCP connections and never answers: a hub that hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    try:
        yield f"https://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()


@pytest.mark.parametrize("how", ["hangs", "refuses", "offline-env"])
def test_unreachable_hub_gives_a_clear_weights_error_quickly(
    preset_cache: Path, monkeypatch: pytest.MonkeyPatch, silent_server: str, how: str
) -> None:
    from huggingface_hub import constants

    from kreaserve.engine import weights

    endpoint = {"hangs": silent_server, "refuses": "https://127.0.0.1:9"}.get(how)
    monkeypatch.setattr(weights, "HUB_PROBE_TIMEOUT_S", 2.0)  # the default is 4 s
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", how == "offline-env")
    if endpoint:
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(preset_cache / "empty-hf-cache"))
    start = time.monotonic()
    with pytest.raises(WeightsError) as caught:
        Engine.load("krea/Krea-2-Turbo", cache_dir=preset_cache, device="cpu")
    assert time.monotonic() - start < 10
    message = str(caught.value)
    _assert_clear(message)
    assert "krea/Krea-2-Turbo" in message and "not reachable" in message


# --- boundaries ---------------------------------------------------------------------------------


#: What the engine may use of ours (ARCHITECTURE: "nothing of ours but config and plain
#: data"): leaf modules that import nothing of kreaserve themselves.
ENGINE_MAY_IMPORT = {"kreaserve.contract", "kreaserve.cachedir"}


def absolute_imports(path: Path) -> list[str]:
    """Every module a file imports by absolute name (relative imports stay in its package)."""
    modules: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            if node.module == "kreaserve":  # `from kreaserve import cachedir` imports a module
                modules += [f"kreaserve.{alias.name}" for alias in node.names]
            else:
                modules.append(node.module or "")
    return modules


def test_engine_modules_import_no_http_sql_or_service_code() -> None:
    forbidden = {"httpx", "fastapi", "starlette", "sqlalchemy", "uvicorn", "requests", "psycopg"}
    for name in ("pipeline.py", "request.py", "weights.py", "presets.py", "tokenizer.py"):
        for module in absolute_imports(ENGINE_DIR / name):
            assert module.split(".")[0] not in forbidden, f"{name} imports {module}"
            if module.startswith("kreaserve"):
                assert module in ENGINE_MAY_IMPORT, f"{name} imports {module}"
    for leaf in ("contract.py", "cachedir.py"):  # the allowed ones stay leaves of plain data
        ours = [m for m in absolute_imports(ENGINE_DIR.parent / leaf) if m.startswith("kreaserve")]
        assert ours == [], f"{leaf} imports {ours}"


def test_a_prompt_of_the_contracts_640_tokens_reaches_the_text_encoder_whole(
    engine: Engine,
) -> None:
    """The API accepts 640 tokens; none of them may be cut by the pipeline's text length."""
    from kreaserve.engine.pipeline import MAX_SEQUENCE_LENGTH
    from kreaserve.tokens import count_tokens

    prompt = "fox " * 640
    while count_tokens(prompt) > 640:
        prompt = prompt[:-4]
    assert count_tokens(prompt) == 640
    _, mask = engine.pipe.get_text_hidden_states([prompt], MAX_SEQUENCE_LENGTH, "cpu")
    assert int(mask.sum()) == 640 + 5  # every prompt token, plus the 5-token suffix
