"""Servers that every xdist worker of one test run shares.

`api_server` and `full_server` are session fixtures, and under xdist each worker process
has a session of its own: with four workers, four API servers and four generating servers
(each loading an engine) per backend. Here the first worker that asks starts the server,
under a file lock in the run's shared folder, and writes down where it is; the others
adopt it; the process that owns the run (xdist's controller, or the one pytest process
without xdist) stops every one of them when the run ends (`stop_all`)."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import psutil

from kreaserve.cachedir import locked

FOLDER = "servers"
#: The servers this process started: referenced for as long as it lives, since they outlive
#: its session (a collected `Popen` of a running process warns, and warnings fail tests).
_STARTED: list[object] = []


class Adopted:
    """What the tests use of `subprocess.Popen`, for a process another worker started."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        try:
            self._process: psutil.Process | None = psutil.Process(pid)
        except psutil.NoSuchProcess:  # it died (a test or a person killed it): exited
            self._process = None
            self.returncode = -1

    def poll(self) -> int | None:
        try:
            alive = self._process is not None and self._process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            alive = False
        if not alive and self.returncode is None:
            self.returncode = -1  # not our child: its exit status is not ours to read
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self._process is None:
            return
        try:
            self._process.send_signal(sig)
        except psutil.NoSuchProcess:
            pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int | None:
        if self._process is None:
            return self.returncode
        try:
            self._process.wait(timeout)
        except psutil.TimeoutExpired:
            raise subprocess.TimeoutExpired(str(self.pid), timeout or 0) from None
        except psutil.NoSuchProcess:
            pass
        return self.poll()


def shared(
    folder: Path,
    name: str,
    start: Callable[[Path], tuple[object, str | None]],
    adopt: Callable[[dict], object],
    describe: Callable[[object], dict],
) -> object:
    """The server `name` of this run: started by `start(its folder)` if nobody has yet
    (it returns the server and a PostgreSQL database to drop at the end, or None),
    otherwise adopted from its record."""
    record = folder / f"{name}.json"
    with locked(folder / f".{name}.lock"):
        if record.exists():
            return adopt(json.loads(record.read_text()))
        server, database = start(folder / name)
        _STARTED.append(server)
        record.write_text(json.dumps({**describe(server), "drop_database": database}))
        return server


def stop_all(folder: Path, drop_database: Callable[[str], None]) -> None:
    """Stop every shared server of the run (workers first), then drop their databases."""
    if not folder.is_dir():
        return
    for record in sorted(folder.glob("*.json")):
        described = json.loads(record.read_text())
        for pid in [*described["worker_pids"], described["api_pid"]]:
            process = Adopted(pid)
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        if described["drop_database"]:
            drop_database(described["drop_database"])
        record.unlink()
