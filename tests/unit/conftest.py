"""Fixtures of the moderation tests: the real models, exported once per test run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kreaserve.moderation import ModerationConfig, PromptModerator, encoder
from tests.conftest import shared_dir


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one-time ONNX export, built once per test run, in the folder the test servers
    use too (set KREASERVE_TEST_MODERATION_CACHE to reuse one between runs)."""
    reuse = os.environ.get("KREASERVE_TEST_MODERATION_CACHE")
    path = Path(reuse) if reuse else shared_dir(tmp_path_factory, "weights-cache") / "moderation"
    path.mkdir(exist_ok=True)
    encoder.ensure_encoder(path)
    return path


@pytest.fixture(scope="session")
def moderator(cache_dir: Path) -> PromptModerator:
    m = PromptModerator(ModerationConfig(cache_dir=cache_dir))
    m.warm()
    return m
