"""Shared fixtures: real databases (SQLite file, a fresh PostgreSQL database) and real
servers (`kreaserve serve` / `kreaserve worker` subprocesses on free ports)."""

from __future__ import annotations

import os

# Under xdist (the parallel part of scripts/test), one compute thread per torch (OpenMP) and
# MKL pool, in this process and in every server and engine it starts (they inherit the
# environment), unless the caller sets its own. Several servers and engines then run at once
# on few cores; with a pool per core each, their threads spin-wait for one another. Measured
# on the 2-core CI machine under the suite's load: one tiny-random 1K image 13.3 s of CPU
# with the default pool, 2.7 s with one thread; an engine start 12.5 s against 8.1 s. The
# `timing` tests run alone afterwards, with the default pool their bounds were set with.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from kreaserve import accounts, ledger
from kreaserve.cachedir import locked
from kreaserve.db import Database, upgrade
from kreaserve.moderation import encoder
from tests import shared_servers
from tests.s3util import MotoServer, moto_server
from tests.shared_servers import Adopted
from tests.tlsutil import make_ca_and_cert

POSTGRES_URL = os.environ.get(
    "KREASERVE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
#: .ci/run sets this, so a missing PostgreSQL fails CI instead of skipping.
REQUIRE_POSTGRES = os.environ.get("KREASERVE_REQUIRE_POSTGRES") == "1"


# --- databases -----------------------------------------------------------------------------


def _admin_connect():  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin URL of a reachable PostgreSQL, or a skip that says why."""
    try:
        _admin_connect().close()
    except Exception as exc:  # noqa: BLE001
        reason = (
            f"PostgreSQL not reachable at {POSTGRES_URL} ({exc}); set "
            "KREASERVE_TEST_POSTGRES_URL to run the PostgreSQL tests"
        )
        if REQUIRE_POSTGRES:
            pytest.fail(reason)
        pytest.skip(reason)
    return POSTGRES_URL


def make_postgres_database(admin_url: str) -> tuple[str, callable]:
    """A new empty database; returns its URL and a function that drops it."""
    name = f"kreaserve_test_{secrets.token_hex(4)}"
    with _admin_connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0]
    return f"{base}/{name}", lambda: drop_postgres_database(name)


def drop_postgres_database(name: str) -> None:
    with _admin_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def shared_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A folder of this test run that every xdist worker shares (the run's base temp folder
    is per worker under xdist; its parent is the run's). What goes in it is built once under
    a file lock by whoever comes first (kreaserve/cachedir.py), so workers never race."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    path = root / name
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def weights_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One preset cache for the whole run (the tiny-random build happens once, in the first
    server or engine that asks; the other xdist workers find it built)."""
    override = os.environ.get("KREASERVE_TEST_CACHE_DIR")
    path = Path(override) if override else shared_dir(tmp_path_factory, "weights-cache")
    # The prompt classifier's one-time ONNX export (a minute of CPU on a busy machine),
    # built here once rather than inside the first server's start-up wait.
    (path / "moderation").mkdir(exist_ok=True)
    encoder.ensure_encoder(path / "moderation")
    return path


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A real S3 server (moto in server mode, its own process) for the whole session;
    take a fresh bucket per test with `s3_server.new_bucket()`."""
    with moto_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database of each backend (function scope)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'test.db'}"
        upgrade(url)
        yield url
        return
    admin = request.getfixturevalue("postgres_server")
    url, drop = make_postgres_database(admin)
    upgrade(url)
    yield url
    drop()


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def new_account(db: Database, credits: float = 100.0, name: str = "test") -> tuple[int, str]:
    """An account with a key; returns (account_id, secret key)."""
    with db.transaction() as session:
        account_id = accounts.create_account(session, name, ledger.to_units(credits))
        key = accounts.create_key(session, account_id, name)
    return account_id, key.secret


def refused_within(send: callable, since: float, bound: float) -> httpx.Response:
    """Send until the answer is not 200, and assert no request *sent* more than `bound`
    seconds after `since` was answered 200. Timing the sending, not the answer, keeps the
    check exact on a loaded machine: a request that waited in a queue was still checked
    after it was sent. Returns the first answer that was not 200."""
    while True:
        sent = time.monotonic()
        response = send()
        if response.status_code != 200:
            return response
        assert sent - since < bound, f"still accepted {sent - since:.2f} s after revoking"
        time.sleep(0.05)


# --- servers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Proc:
    """A kreaserve subprocess with its log file."""

    popen: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return self.popen.returncode


@dataclass
class Server:
    """A running kreaserve API (with or without workers) and a way to make keys for it."""

    url: str
    database_url: str
    data_dir: Path
    env: dict[str, str]
    api: Proc
    workers: list[Proc] = field(default_factory=list)
    db: Database | None = None

    def key(self, credits: float = 100.0) -> str:
        return new_account(self.database(), credits)[1]

    def account(self, credits: float = 100.0) -> tuple[int, str]:
        return new_account(self.database(), credits)

    def database(self) -> Database:
        if self.db is None:
            self.db = Database(self.database_url)
        return self.db

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    def logs(self) -> str:
        return "\n".join(p.output()[-6000:] for p in [self.api, *self.workers])

    def stop(self) -> None:
        for proc in [*self.workers, self.api]:
            proc.stop()
        if self.db is not None:
            self.db.dispose()


def spawn(args: list[str], env: dict[str, str], log: Path) -> Proc:
    with log.open("ab") as handle:  # the child keeps its own descriptor
        popen = subprocess.Popen(
            [sys.executable, "-m", "kreaserve.cli", *args],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Proc(popen, log)


def wait_for(url: str, proc: Proc, timeout: float = 120, status: int = 200) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"server exited with {proc.popen.returncode}:\n{proc.output()}")
        try:
            if httpx.get(url, timeout=2).status_code == status:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not {status} after {timeout} s:\n{proc.output()}")


def start_server(
    tmp: Path,
    database_url: str,
    cache: Path,
    *,
    embedded_worker: bool,
    separate_workers: int = 0,
    wait_ready: bool = True,
    extra_env: dict[str, str] | None = None,
    port: int | None = None,
    data_dir: Path | None = None,
) -> Server:
    """Start `kreaserve serve` (and `kreaserve worker`s) and wait until it answers."""
    port = port or free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    data_dir = data_dir or tmp / "data"
    env = {
        **os.environ,
        "KREASERVE_DATA_DIR": str(data_dir),
        "KREASERVE_DATABASE_URL": database_url,
        "KREASERVE_CACHE_DIR": str(cache),
        "KREASERVE_PORT": str(port),
        "KREASERVE_HOST": "127.0.0.1",
        "KREASERVE_WEIGHTS": "auto",
        "KREASERVE_SECRET_KEY": "test-secret",
        # Tests poll every 20 ms; the limit tests set their own per-account limits.
        "KREASERVE_REQUESTS_PER_MINUTE": "1000000",
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    args = ["serve"] if embedded_worker else ["serve", "--no-worker"]
    api = spawn(args, env, tmp / f"api-{port}.log")
    url = f"http://127.0.0.1:{port}"
    server = Server(url=url, database_url=database_url, data_dir=data_dir, env=env, api=api)
    try:
        wait_for(f"{url}/healthz", api)
        for index in range(separate_workers):
            server.workers.append(spawn(["worker"], env, tmp / f"worker-{port}-{index}.log"))
        if wait_ready and (embedded_worker or separate_workers):
            for proc in [api, *server.workers]:
                if proc.popen.poll() is not None:
                    raise RuntimeError(proc.output())
            wait_for(f"{url}/readyz", api, timeout=300)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """(database URL, temp folder) for each backend, one database per session."""
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "sqlite":
        yield f"sqlite:///{tmp / 'kreaserve.db'}", tmp
        return
    admin = request.getfixturevalue("postgres_server")
    url, drop = make_postgres_database(admin)
    yield url, tmp
    drop()


def _describe(server: Server) -> dict:
    return {
        "url": server.url,
        "database_url": server.database_url,
        "data_dir": str(server.data_dir),
        "env": server.env,
        "api_pid": server.api.popen.pid,
        "api_log": str(server.api.log),
        "worker_pids": [w.popen.pid for w in server.workers],
        "worker_logs": [str(w.log) for w in server.workers],
    }


def _adopt(described: dict) -> Server:
    return Server(
        url=described["url"],
        database_url=described["database_url"],
        data_dir=Path(described["data_dir"]),
        env=described["env"],
        api=Proc(Adopted(described["api_pid"]), Path(described["api_log"])),
        workers=[
            Proc(Adopted(pid), Path(log))
            for pid, log in zip(described["worker_pids"], described["worker_logs"], strict=True)
        ],
    )


def shared_server(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    start: Callable[[Path], tuple[Server, str | None]],
) -> Iterator[Server]:
    """One server `name` for the whole run, shared by every xdist worker
    (tests/shared_servers.py); stopped by pytest_sessionfinish, not here."""
    folder = shared_dir(tmp_path_factory, shared_servers.FOLDER)
    server = shared_servers.shared(folder, name, start, _adopt, _describe)
    assert isinstance(server, Server)
    yield server
    if server.db is not None:
        server.db.dispose()


def new_database(
    backend: tuple[str, Path], folder: Path, file: str
) -> tuple[str, Callable[[], None] | None]:
    """An empty database of the backend under test, for a server of a test's own: the
    SQLite file `folder / file`, or a new PostgreSQL database. Returns its URL and the
    function that drops it (None for SQLite: the file goes with its folder)."""
    if backend[0].startswith("sqlite"):
        return f"sqlite:///{folder / file}", None
    return make_postgres_database(POSTGRES_URL)


def _postgres_or_sqlite(
    backend: tuple[str, Path], folder: Path, file: str
) -> tuple[str, str | None]:
    """A new database for a shared server: (URL, PostgreSQL database to drop or None)."""
    url, drop = new_database(backend, folder, file)
    return url, None if drop is None else url.rsplit("/", 1)[1]


def _backend_name(backend: tuple[str, Path]) -> str:
    return "sqlite" if backend[0].startswith("sqlite") else "postgres"


@pytest.fixture(scope="session")
def api_server(
    backend: tuple[str, Path], weights_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The API alone (no worker): tasks stay pending, so queue states are deterministic.
    One per backend for the whole run."""

    def start(folder: Path) -> tuple[Server, str | None]:
        folder.mkdir(parents=True, exist_ok=True)
        url, drop = _postgres_or_sqlite(backend, folder, "api.db")
        server = start_server(
            folder, url, weights_cache, embedded_worker=False, extra_env=API_SERVER_ENV
        )
        return server, drop

    yield from shared_server(tmp_path_factory, f"api-{_backend_name(backend)}", start)


ADMIN_TOKEN = "test-admin-token"
#: The API-only server has an admin token and a price table with a `pro` group.
API_SERVER_ENV = {
    "KREASERVE_ADMIN_TOKEN": ADMIN_TOKEN,
    "KREASERVE_PRICES": '{"krea-2-turbo": {"pro": {"1K": 0.3, "2K": 1.2}}}',
}


@pytest.fixture(scope="session")
def callback_tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(CA, certificate, key) for `localhost`, one set per run (every xdist worker reads the
    same files): the callback receivers of tests/integration/test_callbacks.py serve this
    certificate, and the servers that call them back trust the CA."""
    folder = shared_dir(tmp_path_factory, "tls")
    files = (folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    with locked(folder / ".lock"):
        if not all(path.is_file() for path in files):
            made = make_ca_and_cert(folder / "made", ["localhost"])
            for source, target in zip(made, files, strict=True):
                source.replace(target)
    return files


def callback_env(tls: tuple[Path, Path, Path]) -> dict[str, str]:
    """What a server needs to call back a test's HTTPS receiver on `localhost`."""
    return {"SSL_CERT_FILE": str(tls[0]), "KREASERVE_CALLBACK_ALLOW_HOSTS": "localhost"}


#: The generating server withholds every image of an `nsfw_check` task: its image threshold is
#: below what noise images score (tests/integration/test_moderation_api.py); without
#: `nsfw_check` no image is classified.
FULL_SERVER_ENV = {"KREASERVE_MODERATION_IMAGE_THRESHOLD": "0.00001"}


@pytest.fixture(scope="session")
def full_server(
    backend: tuple[str, Path],
    weights_cache: Path,
    tmp_path_factory: pytest.TempPathFactory,
    callback_tls: tuple[Path, Path, Path],
) -> Iterator[Server]:
    """A server that generates: embedded worker on SQLite; API plus a separate
    `kreaserve worker` process on PostgreSQL (the distributed layout). One per backend for
    the whole run. It calls back the receivers of `callback_tls` and withholds the images
    of `nsfw_check` tasks (FULL_SERVER_ENV)."""

    def start(folder: Path) -> tuple[Server, str | None]:
        folder.mkdir(parents=True, exist_ok=True)
        url, drop = _postgres_or_sqlite(backend, folder, "full.db")
        sqlite = drop is None
        server = start_server(
            folder,
            url,
            weights_cache,
            embedded_worker=sqlite,
            separate_workers=0 if sqlite else 1,
            extra_env={**FULL_SERVER_ENV, **callback_env(callback_tls)},
        )
        return server, drop

    yield from shared_server(tmp_path_factory, f"full-{_backend_name(backend)}", start)


# --- test tiers ----------------------------------------------------------------------------

#: Fixtures a unit test may not use: unit tests need no server and no PostgreSQL.
NOT_FOR_UNIT_TESTS = frozenset(
    {"postgres_server", "database_url", "backend", "api_server", "full_server", "s3_server"}
)
TESTS = Path(__file__).resolve().parent


def tier(item: pytest.Item) -> str:
    """unit, engine (needs torch), integration or acceptance: the folder under tests/."""
    return Path(str(item.path)).resolve().relative_to(TESTS).parts[0]


#: The longest test files, longest first (wall time in the parallel part of a full run,
#: 2026-11-30, under its load), collected in this order so that xdist hands them out first
#: (scripts/test passes --no-loadscope-reorder, which keeps it; xdist would otherwise start
#: the files with the most tests first): started last, one of them alone would set the
#: suite's end while the other workers sit idle.
LONGEST_FIRST = (
    "integration/test_callbacks.py",  # 231 s
    "engine/test_engine_batching.py",  # 113 s
    "integration/test_fleet.py",  # 101 s
    "integration/test_lifecycle.py",  # 97 s
    "integration/test_openapi.py",  # 88 s
    "acceptance/test_cli.py",  # 78 s
    "integration/test_metrics.py",  # 65 s
    "integration/test_accounts.py",  # 63 s
    "integration/test_batching.py",  # 59 s
    "integration/test_generation.py",  # 58 s
    "integration/test_sizes.py",  # 48 s
    "integration/test_task_events.py",  # 47 s
    "integration/test_api_contract.py",  # 46 s
    "integration/test_engine_child.py",  # 39 s
    "engine/test_engine.py",  # 36 s
    "unit/test_worker_loop.py",  # 34 s
    "engine/test_tokenizer_files.py",  # 32 s
    "integration/test_s3_storage.py",  # 31 s
    "acceptance/test_cli_errors.py",  # 30 s
    "acceptance/test_account_page.py",  # 28 s
    "unit/test_types.py",  # 27 s
    "integration/test_s3_service.py",  # 26 s
    "acceptance/test_playground.py",  # 26 s
    "integration/test_openai_clients.py",  # 21 s
    "integration/test_sealed_files.py",  # 19 s
    "integration/test_client_sdk.py",  # 18 s
)


def longest_first(item: pytest.Item) -> int:
    path = Path(str(item.path)).resolve().relative_to(TESTS).as_posix()
    return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that needs PostgreSQL `postgres` (the parametrized fixtures mark
    their postgres case themselves), keep the unit tier what it says, and put the longest
    files first (a stable sort: the rest keep their order)."""
    items.sort(key=longest_first)
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params.values() if callspec else ()
        if "postgres_server" in item.fixturenames or "postgres" in params:
            item.add_marker(pytest.mark.postgres)
        if tier(item) == "unit":
            used = NOT_FOR_UNIT_TESTS.intersection(item.fixturenames)
            if used:
                raise pytest.UsageError(
                    f"{item.nodeid} is a unit test but uses {sorted(used)}; "
                    "move it to tests/integration"
                )
    if items and all(tier(item) == "unit" for item in items) and "torch" in sys.modules:
        raise pytest.UsageError(
            "a module of tests/unit imported torch; tests that need it belong in tests/engine"
        )


# --- CI strictness -------------------------------------------------------------------------


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the run's shared servers (in the process that owns the run); under
    KREASERVE_REQUIRE_POSTGRES=1 (CI), any skipped test fails the run."""
    if not hasattr(session.config, "workerinput"):
        factory = session.config._tmp_path_factory  # type: ignore[attr-defined]  # as xdist does
        shared_servers.stop_all(shared_dir(factory, shared_servers.FOLDER), drop_postgres_database)
    if not REQUIRE_POSTGRES or hasattr(session.config, "workerinput"):
        return  # xdist workers report to the controller, which counts every skip
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        reporter.write_line(
            f"{len(skipped)} tests were skipped; CI requires every test to run.", red=True
        )
        session.exitstatus = 1
