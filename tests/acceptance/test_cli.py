"""The CLI as a person uses it: `keys create` beside a running server, then `generate`."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from kreaserve.config import Settings
from tests.conftest import Server


def kreaserve(
    *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kreaserve.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_keys_create_then_generate_round_trip(full_server: Server, tmp_path: Path) -> None:
    created = kreaserve("keys", "create", "--name", "demo", "--credits", "100", env=full_server.env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("ks_") and "\n" not in key  # the key alone on stdout
    assert "shown only once" in created.stderr and key not in created.stderr

    listed = kreaserve("keys", "list", env=full_server.env)
    assert key[:11] in listed.stdout and key not in listed.stdout

    out = tmp_path / "fox.png"
    env = {
        **full_server.env,
        "KREASERVE_URL": full_server.url,
        "KREASERVE_API_KEY": key,
        "COLUMNS": "100",
    }
    result = kreaserve(
        "generate",
        "a red fox in snow",
        "--size",
        "16:9",
        "--quality",
        "1K",
        "--seed",
        "7",
        "-o",
        str(out),
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "completed" in result.stdout and "100%" in result.stdout  # the progress bar
    assert f"saved {out}" in result.stdout and "seed 7" in result.stdout
    with Image.open(out) as image:
        assert image.size == (1344, 768)
        pixels = image.tobytes()

    again = tmp_path / "again.png"
    assert (
        kreaserve(
            "generate",
            "a red fox in snow",
            "--size",
            "16:9",
            "--seed",
            "7",
            "-o",
            str(again),
            env=env,
        ).returncode
        == 0
    )
    with Image.open(again) as image:
        assert image.tobytes() == pixels


def test_generate_reports_contract_errors_clearly(full_server: Server, tmp_path: Path) -> None:
    env = {
        **full_server.env,
        "KREASERVE_URL": full_server.url,
        "KREASERVE_API_KEY": full_server.key(),
    }
    bad = kreaserve("generate", "a fox", "--size", "7:5", "-o", str(tmp_path / "x.png"), env=env)
    assert bad.returncode == 1
    assert "size must be one of" in bad.stderr and "invalid_size" in bad.stderr
    assert "Traceback" not in bad.stderr
    nokey = kreaserve("generate", "a fox", env={**env, "KREASERVE_API_KEY": "ks_wrong"})
    assert nokey.returncode == 1 and "invalid_api_key" in nokey.stderr
    down = kreaserve("generate", "a fox", env={**env, "KREASERVE_URL": "http://127.0.0.1:9"})
    assert down.returncode == 1 and "cannot reach" in down.stderr
    assert not (tmp_path / "x.png").exists()


def test_credits_grant_and_revoke(full_server: Server) -> None:
    account_id, key = full_server.account(credits=1)
    granted = kreaserve("credits", "grant", str(account_id), "2.5", env=full_server.env)
    assert granted.returncode == 0 and "balance 3.5" in granted.stdout
    with full_server.client(key) as client:
        assert client.get("/v1/credits").json()["balance"] == 3.5
        revoked = kreaserve("keys", "revoke", key[:11], env=full_server.env)
        assert revoked.returncode == 0, revoked.stderr
        # The CLI revokes in the database; the server stops the key within its auth cache
        # bound (KREASERVE_AUTH_CACHE_SECONDS), as test_api_contract checks precisely.
        since = time.monotonic()
        while client.get("/v1/credits").status_code == 200:
            assert time.monotonic() - since < Settings().auth_cache_seconds + 0.5
            time.sleep(0.05)
        assert client.get("/v1/credits").status_code == 401
    missing = kreaserve("credits", "grant", "999999", "1", env=full_server.env)
    assert missing.returncode == 1 and "no account" in missing.stderr
