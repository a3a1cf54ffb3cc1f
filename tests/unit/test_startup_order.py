"""The API builds the token counter's encoding at start-up, before the prompt classifier.

Built on the first create instead, it cost that request about 0.3 s; built after the
classifier (or on the first create) it left the process 12-17 MB larger after the API bench
(BENCHMARKS.md, issue 12)."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from kreaserve import tokens
from kreaserve.api.app import create_app
from kreaserve.config import Settings
from kreaserve.db import Database, upgrade
from kreaserve.moderation import PromptModerator
from kreaserve.storage import LocalStorage


def test_the_encoding_is_built_before_the_classifier_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    monkeypatch.setattr(tokens, "_encoding", None)
    monkeypatch.setattr(
        PromptModerator, "warm", lambda self: seen.append(tokens._encoding is not None)
    )
    url = f"sqlite:///{tmp_path / 'k.db'}"
    upgrade(url)
    settings = Settings(data_dir=tmp_path, database_url=url, secret_key="order")
    db = Database(url)
    try:
        app = create_app(settings, db=db, storage=LocalStorage(settings.images_dir))
        with TestClient(app) as client:
            assert client.get("/healthz").status_code == 200
    finally:
        db.dispose()
    assert seen == [True]
