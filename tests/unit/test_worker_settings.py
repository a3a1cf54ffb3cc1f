"""Engine settings as the worker reads them: GPU slots, option switches, refusals."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from kreaserve import contract
from kreaserve.config import Settings
from kreaserve.worker import engine_load, engine_options, gpu_slots


def test_explicit_gpu_lists_and_none() -> None:
    assert gpu_slots("0,1,2,3") == ["0", "1", "2", "3"]
    assert gpu_slots(" 2 , 5 ") == ["2", "5"]
    assert gpu_slots("none") == [None]
    with pytest.raises(ValueError, match="empty"):
        gpu_slots(" , ")


def test_auto_follows_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert gpu_slots("auto") == ["4", "6"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert gpu_slots("auto") == [None]  # one GPU: the child inherits it as it is


def test_auto_counts_what_nvidia_smi_lists(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        '#!/bin/sh\nfor i in 0 1 2; do echo "GPU $i: NVIDIA H100 80GB HBM3 (UUID: GPU-$i)"; done\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert gpu_slots("auto") == ["0", "1", "2"]
    fake.write_text("#!/bin/sh\nexit 9\n")
    assert gpu_slots("auto") == [None]  # a broken nvidia-smi means: one engine
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert gpu_slots("auto") == [None]


def test_engine_switches_reach_the_engine_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KREASERVE_TRIM_PADDING", "false")
    monkeypatch.setenv("KREASERVE_COMPILE", "true")
    monkeypatch.setenv("KREASERVE_CUDA_GRAPHS", "true")
    monkeypatch.setenv("KREASERVE_ATTENTION_BACKEND", "flash")
    monkeypatch.setenv("KREASERVE_VAE_TILING", "on")
    options = engine_options(Settings())
    assert (options.trim_padding, options.compile, options.cuda_graphs) == (False, True, True)
    assert options.attention_backend == "flash" and options.vae_tiling == "on"
    assert Settings(_env_file=None).batch_size == 1


def test_a_compiling_engine_warms_every_size_and_the_batched_shapes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KREASERVE_BATCH_SIZE", "4")
    monkeypatch.setenv("KREASERVE_ENGINE_MEMORY_LIMIT_MB", "2048")
    plain = engine_load(Settings(_env_file=None), visible_devices="1")
    assert plain.warmup_sizes == ((256, 256),) and plain.warmup_batch_size == 1
    assert plain.visible_devices == "1" and plain.memory_limit_mb == 2048
    monkeypatch.setenv("KREASERVE_COMPILE", "true")
    compiling = engine_load(Settings(_env_file=None))
    assert set(compiling.warmup_sizes) == set(contract.PIXELS.values())
    assert compiling.warmup_batch_size == 4 and compiling.options.compile


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KREASERVE_CUDA_GRAPHS": "true"}, "CUDA_GRAPHS needs KREASERVE_COMPILE"),
        ({"KREASERVE_VAE_TILING": "sometimes"}, "vae_tiling"),
        ({"KREASERVE_BATCH_SIZE": "0"}, "batch_size"),
        ({"KREASERVE_OVERLAP_DECODE": "always"}, "overlap_decode"),
        ({"KREASERVE_ENGINE_MEMORY_LIMIT_MB": "-5"}, "engine_memory_limit_mb"),
        ({"KREASERVE_WORKER_IDLE_POLL_MAX_SECONDS": "0"}, "worker_idle_poll_max_seconds"),
    ],
)
def test_bad_engine_settings_are_refused_with_their_name(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=message):
        Settings()
