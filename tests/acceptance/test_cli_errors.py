"""A person's mistakes and lost connections end the CLI with a line that says what to do,
never a traceback, and never with a task charged that could not be saved."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from PIL import Image

from tests.acceptance.test_cli import kreaserve
from tests.conftest import Server, free_port, start_server

BAD_ENV = {
    "KREASERVE_BATCH_WAIT_MS": "abc",
    "KREASERVE_BATCH_SIZE": "0",
    "KREASERVE_PORT": "http",
    "KREASERVE_ENGINE_GPUS": "banana",
}


@pytest.mark.parametrize(
    "command", [["keys", "list"], ["serve"], ["worker"], ["db", "upgrade"], ["accounts", "list"]]
)
def test_invalid_settings_are_one_line_each(command: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "KREASERVE_DATA_DIR": str(tmp_path), **BAD_ENV}
    result = kreaserve(*command, env=env, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert sorted(lines) == sorted(
        [
            "error: KREASERVE_PORT='http' is not valid: it takes an integer from 0 to 65535",
            "error: KREASERVE_BATCH_SIZE='0' is not valid: it takes an integer from 1 to 16",
            "error: KREASERVE_BATCH_WAIT_MS='abc' is not valid: it takes a number from 0 to 1000",
            "error: KREASERVE_ENGINE_GPUS='banana' is not valid: it takes auto, none, or GPU "
            "indexes separated by commas, such as 0,1,2,3",
        ]
    )
    assert not (tmp_path / "kreaserve.db").exists()


def test_invalid_json_setting_and_flag_are_named(tmp_path: Path) -> None:
    env = {**os.environ, "KREASERVE_DATA_DIR": str(tmp_path), "KREASERVE_PRICES": "{oops"}
    result = kreaserve("keys", "list", env=env, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "error: KREASERVE_PRICES is not valid: it takes a JSON "
        "object (see the README's settings table)"
    )
    flag = kreaserve("serve", "--port", "70000", env={**env, "KREASERVE_PRICES": "{}"}, timeout=60)
    assert flag.returncode == 2
    assert (
        flag.stderr.strip() == "error: --port=70000 is not valid: it takes an integer "
        "from 0 to 65535"
    )


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "KREASERVE_DATABASE_URL": f"postgresql://u@127.0.0.1:{free_port()}/x"}
    result = kreaserve("keys", "list", env=env, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "cannot open the database" in result.stderr and "KREASERVE_DATABASE_URL" in result.stderr


def test_a_port_in_use_stops_serve_before_the_engine_loads(
    tmp_path: Path, weights_cache: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "KREASERVE_DATA_DIR": str(tmp_path),
            "KREASERVE_PORT": str(port),
            "KREASERVE_CACHE_DIR": str(weights_cache),
        }
        began = time.monotonic()
        result = kreaserve("serve", env=env, timeout=120)
    assert result.returncode == 1, result.stderr
    assert f"error: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot listen")
    assert "engine" not in result.stderr.lower() and "Traceback" not in result.stderr
    assert time.monotonic() - began < 60


def _standing(server: Server, key: str) -> dict:
    with server.client(key) as client:
        return client.get("/v1/credits").json()


def test_generate_refuses_an_output_it_cannot_write_before_any_task(
    api_server: Server, tmp_path: Path
) -> None:
    key = api_server.key(credits=10)
    env = {**api_server.env, "KREASERVE_URL": api_server.url, "KREASERVE_API_KEY": key}
    gif = kreaserve("generate", "a cat", "-o", str(tmp_path / "cat.gif"), env=env)
    assert gif.returncode == 1 and "Traceback" not in gif.stderr
    assert "must end in .png, .jpg, .jpeg or .webp" in gif.stderr
    (tmp_path / "taken").write_text("a file where a folder should be")
    blocked = kreaserve("generate", "a cat", "-o", str(tmp_path / "taken" / "x.png"), env=env)
    assert blocked.returncode == 1 and "cannot create the folder" in blocked.stderr
    assert "Traceback" not in blocked.stderr
    assert _standing(api_server, key)["reserved"] == 0  # no task was created


def test_generate_creates_a_missing_folder_first(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "dir" / "x.png"
    env = {
        **os.environ,
        "KREASERVE_URL": f"http://127.0.0.1:{free_port()}",
        "KREASERVE_API_KEY": "ks_test",
    }
    result = kreaserve("generate", "a cat", "-o", str(target), env=env, timeout=60)
    assert result.returncode == 1 and "cannot reach" in result.stderr
    assert target.parent.is_dir() and "Traceback" not in result.stderr


def generate_in_background(server: Server, key: str, *args: str) -> subprocess.Popen[str]:
    """`kreaserve generate` against `server`, once its task is created (reserved)."""
    env = {**server.env, "KREASERVE_URL": server.url, "KREASERVE_API_KEY": key}
    running = subprocess.Popen(
        [sys.executable, "-m", "kreaserve.cli", "generate", "a fox", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while _standing(server, key)["reserved"] == 0:
        assert time.monotonic() < deadline and running.poll() is None, running.communicate()
        time.sleep(0.1)
    return running


def test_a_server_lost_under_generate_names_the_task(tmp_path: Path, weights_cache: Path) -> None:
    server = start_server(
        tmp_path, f"sqlite:///{tmp_path / 'lost.db'}", weights_cache, embedded_worker=False
    )
    try:
        key = server.key()
        running = generate_in_background(
            server, key, "-o", str(tmp_path / "fox.png"), "--reconnect-for", "2"
        )
        began = time.monotonic()
        server.api.stop()
        _out, err = running.communicate(timeout=60)
    finally:
        server.stop()
    assert running.returncode == 1, err
    assert "Traceback" not in err
    assert "still following task-unified-" in err and "for up to 2 s" in err
    assert "lost task task-unified-" in err and "kreaserve tasks get task-unified-" in err
    assert time.monotonic() - began < 30  # bounded: it gave up after --reconnect-for


@pytest.mark.timing
def test_generate_follows_its_task_across_a_server_restart(
    tmp_path: Path, weights_cache: Path
) -> None:
    """The API (no worker yet) is killed mid-task and started again on the same port and
    database, now with a worker: `generate` rides it out and saves the same task's image."""
    database_url = f"sqlite:///{tmp_path / 'restart.db'}"
    first = start_server(tmp_path / "a", database_url, weights_cache, embedded_worker=False)
    port = int(first.env["KREASERVE_PORT"])
    second = None
    try:
        key = first.key()
        out = tmp_path / "out" / "fox.webp"
        running = generate_in_background(first, key, "-o", str(out), "--json")
        first.api.stop(signal.SIGKILL)  # the connection drops; the task stays in the table
        second = start_server(
            tmp_path / "b", database_url, weights_cache, embedded_worker=True, port=port
        )
        stdout, err = running.communicate(timeout=300)
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert running.returncode == 0, err
    # The first server had no worker, so the task could only complete on the second. The
    # SDK's events stream resumes by itself across the restart (with Last-Event-ID and
    # backoff), so `generate` has nothing to report unless the SDK gives up first.
    assert "Traceback" not in err
    task = json.loads(stdout)
    assert task["status"] == "completed" and task["output"] == str(out)
    assert urlsplit(task["results"][0]).path.endswith(".webp")
    with Image.open(out) as image:
        assert image.format == "WEBP" and image.size == (1024, 1024)
