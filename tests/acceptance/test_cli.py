"""The CLI as a person uses it: `keys create` beside a running server, then `generate`;
`tasks` on one's tasks; the operator commands' `--json` (real processes, the session's
servers)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from PIL import Image

from kreaserve.config import Settings
from tests.conftest import Server, refused_within


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
        bound = Settings().auth_cache_seconds + 0.5
        refused_within(lambda: client.get("/v1/credits"), since, bound)
        assert client.get("/v1/credits").status_code == 401
    missing = kreaserve("credits", "grant", "999999", "1", env=full_server.env)
    assert missing.returncode == 1 and "no account" in missing.stderr


def remote_env(server: Server, key: str) -> dict[str, str]:
    return {**server.env, "KREASERVE_URL": server.url, "KREASERVE_API_KEY": key}


def json_of(result: subprocess.CompletedProcess[str]) -> Any:
    """The one JSON document a `--json` command printed (exit status 0)."""
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_tasks_wait_get_and_list_a_task_and_generate_writes_jpeg(
    full_server: Server, tmp_path: Path
) -> None:
    key = full_server.key()
    env = remote_env(full_server, key)
    out = tmp_path / "new" / "fox.jpg"  # the folder does not exist yet
    made = json_of(
        kreaserve("generate", "a fox", "--size", "4:3", "-o", str(out), "--json", env=env)
    )
    assert made["status"] == "completed" and made["output"] == str(out)
    assert urlsplit(made["results"][0]).path.endswith(".jpg")
    with Image.open(out) as image:
        assert image.format == "JPEG" and image.size == (1152, 896)

    waited = json_of(kreaserve("tasks", "wait", made["id"], "--json", env=env))
    got = json_of(kreaserve("tasks", "get", made["id"], "--json", env=env))
    assert waited["id"] == got["id"] == made["id"] and got["status"] == "completed"
    listed = json_of(kreaserve("tasks", "list", "--status", "completed", "--json", env=env))
    assert [task["id"] for task in listed["data"]] == [made["id"]]
    text = kreaserve("tasks", "list", env=env)
    assert text.returncode == 0 and text.stdout.startswith(f"{made['id']}\tcompleted\t100%")


def test_tasks_cancel_and_the_failures_of_tasks_commands(api_server: Server) -> None:
    """On the API alone (no worker), so the task stays pending until cancelled."""
    key = api_server.key()
    env = remote_env(api_server, key)
    with api_server.client(key) as client:
        task_id = client.post(
            "/v1/images/generations", json={"model": "krea-2-turbo", "prompt": "a fox"}
        ).json()["id"]
    cancelled = json_of(kreaserve("tasks", "cancel", task_id, "--json", env=env))
    assert cancelled["id"] == task_id and cancelled["status"] == "cancelled"
    waited = kreaserve("tasks", "wait", task_id, env=env)
    assert waited.returncode == 1 and f"{task_id}\tcancelled" in waited.stdout
    missing = kreaserve("tasks", "get", "task-unified-1-abcdefgh", env=env)
    assert missing.returncode == 1 and "task_not_found" in missing.stderr
    assert "Traceback" not in missing.stderr
    nokey = kreaserve("tasks", "list", env={**env, "KREASERVE_API_KEY": ""})
    assert nokey.returncode == 1 and "no API key" in nokey.stderr
    down = kreaserve("tasks", "list", env={**env, "KREASERVE_URL": "http://127.0.0.1:9"})
    assert down.returncode == 1 and "cannot reach" in down.stderr


def test_operator_commands_print_json_and_the_version(api_server: Server) -> None:
    env = api_server.env
    made = json_of(
        kreaserve("accounts", "create", "--name", "acme", "--credits", "2", "--json", env=env)
    )
    assert made["object"] == "account" and made["balance"] == 2
    key = json_of(
        kreaserve("keys", "create", "--name", "k", "--account", str(made["id"]), "--json", env=env)
    )
    assert key["key"].startswith("ks_") and key["account_id"] == made["id"]
    keys = json_of(kreaserve("keys", "list", "--json", env=env))
    assert key["id"] in [k["id"] for k in keys["data"]] and key["key"] not in json.dumps(keys)
    granted = json_of(kreaserve("credits", "grant", str(made["id"]), "1.5", "--json", env=env))
    assert granted["balance"] == 3.5
    # The admin API's rules: a bad limit is refused naming the flag, nothing changes.
    bad = kreaserve("accounts", "update", str(made["id"]), "--group", " ", env=env)
    assert bad.returncode == 1 and "--group" in bad.stderr
    shown = json_of(kreaserve("accounts", "show", str(made["id"]), "--json", env=env))
    assert shown["user_group"] == "default"
    version = kreaserve("--version", env=env)
    assert (
        version.returncode == 0
        and version.stdout.strip() == f"kreaserve {metadata.version('kreaserve')}"
    )
