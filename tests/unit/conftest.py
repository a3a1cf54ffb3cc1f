"""Fixtures of the moderation tests: the real models, exported once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kreaserve.moderation import ModerationConfig, PromptModerator, encoder


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one-time ONNX export, built once per test session (set
    KREASERVE_TEST_MODERATION_CACHE to reuse one between runs)."""
    reuse = os.environ.get("KREASERVE_TEST_MODERATION_CACHE")
    path = Path(reuse) if reuse else tmp_path_factory.mktemp("moderation-cache")
    encoder.ensure_encoder(path)
    return path


@pytest.fixture(scope="session")
def moderator(cache_dir: Path) -> PromptModerator:
    m = PromptModerator(ModerationConfig(cache_dir=cache_dir))
    m.warm()
    return m
