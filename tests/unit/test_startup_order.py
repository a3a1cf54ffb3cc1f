"""The API does not build the token counter's encoding at start-up (37 MB of RSS).

Only a prompt over 640 bytes can be over the 640-token limit (kreaserve.tokens.count_if_over),
so the encoding is built on the first such prompt, not at start-up and not for a short one
(BENCHMARKS.md, issue 12, fourth pass)."""

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
from tests.conftest import new_account


def test_the_encoding_is_built_only_for_a_prompt_over_640_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokens, "_encoding", None)
    monkeypatch.setattr(PromptModerator, "warm", lambda self: None)
    url = f"sqlite:///{tmp_path / 'k.db'}"
    upgrade(url)
    settings = Settings(data_dir=tmp_path, database_url=url, secret_key="order")
    db = Database(url)
    _, key = new_account(db)
    built = []
    try:
        app = create_app(settings, db=db, storage=LocalStorage(settings.images_dir))
        with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
            assert client.get("/healthz").status_code == 200
            built.append(tokens._encoding is not None)
            # The prompt is validated (a bad size fails the same body, before any moderation).
            body = {"model": "krea-2-turbo", "prompt": "a fox, " * 90, "size": "bad"}
            response = client.post("/v1/images/generations", json=body)
            assert response.json()["error"]["param"] == "size", response.text
            built.append(tokens._encoding is not None)
            body["prompt"] = "a fox, " * 400  # 2,800 bytes, 1,200 tokens
            response = client.post("/v1/images/generations", json=body)
            assert response.json()["error"]["code"] == "prompt_too_long", response.text
            built.append(tokens._encoding is not None)
    finally:
        db.dispose()
    assert built == [False, False, True]
