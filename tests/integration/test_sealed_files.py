"""Secrets at rest: a real `kreaserve serve` (SQLite, embedded worker, no configured URL
key) started under a permissive umask keeps its data folder 0700 and every file in it
(database, WAL, shared memory, secret.key, result images) 0600; a data folder and a
database left readable by an older version are closed at start."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from kreaserve.config import Settings
from tests.conftest import start_server
from tests.integration.test_generation import GOOD, wait_until_done


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes_under(root: Path) -> dict[str, int]:
    found = {".": mode(root)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = mode(path)
    return found


def test_a_real_servers_data_folder_is_0700_and_its_files_0600(
    tmp_path: Path, weights_cache: Path
) -> None:
    data = tmp_path / "data"
    env = {"KREASERVE_SECRET_KEY": ""}  # the key is generated into <data>/secret.key
    with umask(0o022):
        server = start_server(
            tmp_path,
            f"sqlite:///{data / 'kreaserve.db'}",
            weights_cache,
            embedded_worker=True,
            extra_env=env,
            data_dir=data,
        )
    try:
        with server.client(server.key()) as client:
            task = client.post("/v1/images/generations", json=GOOD).json()
            assert wait_until_done(client, task["id"])[-1]["status"] == "completed"
        found = modes_under(data)
    finally:
        server.stop()
    print("modes under the data folder:", {name: oct(m) for name, m in found.items()})
    for name in ("kreaserve.db", "kreaserve.db-wal", "kreaserve.db-shm", "secret.key"):
        assert name in found, sorted(found)
    images = [name for name in found if name.endswith(".png")]
    assert images, sorted(found)
    folders = {name for name in found if (data / name).is_dir()}
    assert {name: oct(found[name]) for name in folders} == {n: "0o700" for n in folders}
    files = set(found) - folders
    assert {name: oct(found[name]) for name in files} == {n: "0o600" for n in files}


def test_an_open_data_folder_and_database_are_closed_at_start(tmp_path: Path) -> None:
    from kreaserve.cli import open_database

    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    settings = Settings(data_dir=data, secret_key="")
    with umask(0o022):
        open_database(settings).dispose()
        database = data / "kreaserve.db"
        os.chmod(database, 0o644)
        os.chmod(data, 0o755)
        db = open_database(settings)
    try:
        assert mode(data) == 0o700
        assert mode(database) == 0o600
    finally:
        db.dispose()


def test_secret_key_is_created_with_its_mode_and_the_first_key_wins(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", secret_key="")
    with umask(0o000):  # the most permissive: the mode must come from the creation itself
        first = settings.hmac_key()
        again = Settings(data_dir=tmp_path / "data", secret_key="").hmac_key()
    assert first == again and len(first) == 64
    assert mode(tmp_path / "data" / "secret.key") == 0o600
    assert mode(tmp_path / "data") == 0o700
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["secret.key"]


@pytest.mark.parametrize("existing", [0o644])
def test_an_existing_secret_key_is_closed_too(tmp_path: Path, existing: int) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "secret.key").write_text("ab" * 32)
    os.chmod(data / "secret.key", existing)
    assert Settings(data_dir=data, secret_key="").hmac_key() == b"ab" * 32
    assert mode(data / "secret.key") == 0o600
