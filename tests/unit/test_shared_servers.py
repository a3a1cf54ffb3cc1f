"""The shared test servers' bookkeeping (tests/shared_servers.py): a server that died
before the run's end is stopped like one that lives, without failing the run's summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil

from tests.shared_servers import Adopted, stop_all


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_an_adopted_process_that_is_gone_reads_as_exited() -> None:
    gone = Adopted(dead_pid())
    assert gone.poll() == -1 and gone.wait(1) == -1
    gone.send_signal(15)
    gone.kill()  # nothing to signal, no error


def test_stop_all_passes_over_a_server_that_died_and_stops_the_others(tmp_path: Path) -> None:
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    record = {"worker_pids": [dead_pid()], "api_pid": alive.pid, "drop_database": "db1"}
    (tmp_path / "full-sqlite.json").write_text(json.dumps(record))
    dropped: list[str] = []
    stop_all(tmp_path, dropped.append)
    assert not psutil.pid_exists(alive.pid)  # stopped (and reaped) well before its 60 s
    alive.wait(10)  # psutil reaped it; Popen learns it is gone
    assert dropped == ["db1"] and not list(tmp_path.glob("*.json"))
