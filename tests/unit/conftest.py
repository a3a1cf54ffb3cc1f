"""Fixtures of the unit tests: a migrated SQLite file; the moderation tests' real models,
exported once per test run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kreaserve.db import Database, upgrade
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


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    """A migrated, empty SQLite file of this test's own (unit tests do not take the
    backend-parametrised `db`)."""
    url = f"sqlite:///{tmp_path / 'unit.db'}"
    upgrade(url)
    database = Database(url)
    yield database
    database.dispose()
