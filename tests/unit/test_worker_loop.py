"""The worker loop driven by a fake engine on SQLite: leases, cancels, engine deaths,
timeouts, database outages in every phase. No torch, no child process."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
from sqlalchemy import update

from kreaserve import contract, ledger, task_queue, worker_registry
from kreaserve.config import Settings
from kreaserve.db import Database, upgrade
from kreaserve.db.models import Task
from kreaserve.engine import messages as m
from kreaserve.engine.handle import EngineProtocolError, EngineStartError
from kreaserve.states import WorkerState
from kreaserve.storage import LocalStorage
from kreaserve.worker import Worker
from tests.conftest import new_account
from tests.unit.fake_engine import (
    FakeEngine,
    FakePipeline,
    FlakyDatabase,
    ThreadEngine,
    wait_for,
)

PRICE = ledger.to_units(0.45)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file per module; each test gets a copy (migrating takes ~1 s)."""
    path = tmp_path_factory.mktemp("template") / "worker.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def sqlite_url(migrated: Path, tmp_path: Path) -> str:
    copy = tmp_path / "worker.db"
    shutil.copyfile(migrated, copy)
    return f"sqlite:///{copy}"


@pytest.fixture
def db(sqlite_url: str) -> Iterator[Database]:
    """The test's own view of the database (never down)."""
    database = Database(sqlite_url)
    yield database
    database.dispose()


@pytest.fixture
def worker_db(sqlite_url: str) -> Iterator[FlakyDatabase]:
    """The workers' database, which a test can take down."""
    database = FlakyDatabase(sqlite_url)
    yield database
    database.down.clear()
    database.dispose()


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "images")


@pytest.fixture(autouse=True)
def quick_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    import kreaserve.worker as worker_module

    for module in (worker_module, *_submodules(worker_module)):
        if hasattr(module, "HEARTBEAT_SECONDS"):
            monkeypatch.setattr(module, "HEARTBEAT_SECONDS", 0.2)


def _submodules(package: object) -> list[object]:
    import sys

    name = getattr(package, "__name__", "")
    return [module for key, module in list(sys.modules.items()) if key.startswith(name + ".")]


def settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = dict(
        data_dir=tmp_path,
        lease_seconds=3.0,
        worker_poll_seconds=0.05,
        batch_size=1,
        batch_wait_ms=0,
        task_timeout_seconds=30.0,
        max_attempts=3,
    )
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def create_task(db: Database, account_id: int, seed: int = 5) -> str:
    params = task_queue.NewTask(
        prompt="a fox", size="1:1", quality="1K", seed=seed, nsfw_check=False, callback_url=None
    )
    return task_queue.create(db, account_id, None, "default", params, PRICE).id


def task_row(db: Database, task_id: str) -> Task:
    with db.transaction() as session:
        return session.get(Task, task_id)


def status(db: Database, task_id: str) -> str:
    return task_row(db, task_id).status


def wait_status(db: Database, task_id: str, wanted: str, timeout: float = 15) -> Task:
    wait_for(
        lambda: status(db, task_id) == wanted,
        timeout,
        f"task {task_id} to be {wanted} (it is {status(db, task_id)})",
    )
    return task_row(db, task_id)


class Run:
    """A started worker with its fake engine; stopped by the fixture."""

    def __init__(self, worker: Worker, engine: FakeEngine, fatal: list[str]) -> None:
        self.worker, self.engine, self.fatal = worker, engine, fatal


@pytest.fixture
def start_worker(worker_db: FlakyDatabase, storage: LocalStorage, tmp_path: Path) -> Iterator:
    started: list[Worker] = []

    def start(engine: FakeEngine | None = None, **overrides: object) -> Run:
        engine = engine or FakeEngine()
        fatal: list[str] = []
        worker = Worker(
            settings(tmp_path, **overrides),
            worker_db,
            storage,
            engine=engine,
            on_fatal=fatal.append,
        )
        worker.start()
        started.append(worker)
        return Run(worker, engine, fatal)

    yield start
    worker_db.down.clear()
    for worker in started:
        worker.stop()


def threads_alive(worker: Worker) -> list[str]:
    return [thread.name for thread in worker._threads if thread.is_alive()]


# --- the happy path ------------------------------------------------------------------------


def test_a_task_runs_and_its_result_is_stored(
    db: Database, storage: LocalStorage, start_worker
) -> None:
    account_id, _ = new_account(db)
    task_id = create_task(db, account_id)
    run = start_worker()
    task = wait_status(db, task_id, contract.COMPLETED)
    (key,) = task.result_keys
    assert storage.path(key).read_bytes() == run.engine.png
    assert task.billing_state == "charged" and task.progress == 100
    assert run.engine.starts == 1 and run.engine.stops == 0


# --- database outages ----------------------------------------------------------------------


@pytest.mark.parametrize("phase", ["claim_batch", "renew", "complete", "worker_heartbeat"])
def test_a_database_outage_in_any_phase_never_stops_the_warm_engine(
    db: Database,
    worker_db: FlakyDatabase,
    storage: LocalStorage,
    start_worker,
    monkeypatch: pytest.MonkeyPatch,
    phase: str,
) -> None:
    """The outage starts on the worker's first call of `phase` and lasts 1.5 s; the task
    still completes, on the engine that was warm before it."""
    account_id, _ = new_account(db)
    task_id = create_task(db, account_id)
    module = worker_registry if phase == "worker_heartbeat" else task_queue
    real = getattr(module, phase)
    calls = {"n": 0}
    # The first heartbeat runs in `start()` itself, before there is an engine to keep warm.
    trigger_at = 2 if phase == "worker_heartbeat" else 1

    def with_outage(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == trigger_at:
            worker_db.outage(1.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, phase, with_outage)
    run = start_worker(FakeEngine(step_seconds=0.05))
    task = wait_status(db, task_id, contract.COMPLETED, timeout=20)
    assert worker_db.failures > 0, "the outage did not happen"
    assert storage.path(task.result_keys[0]).read_bytes() == run.engine.png
    assert (run.engine.starts, run.engine.stops) == (1, 0), "the engine was restarted"
    assert sorted(threads_alive(run.worker)) == ["kreaserve-heartbeat", "kreaserve-worker"]
    assert not run.fatal
    # The worker is still serving: a second task runs too.
    second = create_task(db, account_id, seed=6)
    wait_status(db, second, contract.COMPLETED)


def test_an_outage_while_the_engine_restarts_leaves_no_zombie(
    db: Database,
    worker_db: FlakyDatabase,
    start_worker,
) -> None:
    """The engine dies and the database is down at the same time: the worker requeues the
    task and restarts its engine once the database is back, instead of a dead loop thread
    beside a heartbeat that looks alive."""
    account_id, _ = new_account(db)
    task_id = create_task(db, account_id)
    run = start_worker(FakeEngine(step_seconds=0.1))
    wait_for(lambda: task_row(db, task_id).progress > 0, what="progress")
    worker_db.outage(2.0)
    run.engine.kill()
    task = wait_status(db, task_id, contract.COMPLETED, timeout=20)
    assert task.attempts == 2
    assert run.engine.starts == 2
    assert sorted(threads_alive(run.worker)) == ["kreaserve-heartbeat", "kreaserve-worker"]


def test_the_worker_backs_off_while_the_database_is_down(
    db: Database,
    worker_db: FlakyDatabase,
    start_worker,
) -> None:
    account_id, _ = new_account(db)
    task_id = create_task(db, account_id)
    run = start_worker(FakeEngine(step_seconds=0.2))
    wait_for(lambda: task_row(db, task_id).progress > 0, what="progress")
    worker_db.outage(3.0)
    wait_for(lambda: not worker_db.down.is_set(), timeout=5)
    # A tick is 0.25 s and a heartbeat 0.2 s here: without a backoff that is ~30 attempts.
    assert 2 <= worker_db.failures <= 14, worker_db.failures
    wait_status(db, task_id, contract.COMPLETED)
    assert run.engine.starts == 1


def test_a_worker_thread_that_dies_ends_the_worker_as_fatal(start_worker) -> None:
    engine = FakeEngine()
    engine.start_error = RuntimeError("a bug in the worker")
    run = start_worker(engine)
    wait_for(lambda: run.fatal, what="on_fatal")
    assert "a bug in the worker" in run.fatal[0]
    assert run.worker.fatal_message and "kreaserve-worker" in run.worker.fatal_message
    wait_for(lambda: not threads_alive(run.worker), what="every thread to end")


# --- leases ---------------------------------------------------------------------------------


def test_a_lost_lease_cancels_the_job_and_leaves_the_task_to_its_owner(
    db: Database,
    start_worker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    account_id, _ = new_account(db)
    task_id = create_task(db, account_id)
    engine = FakeEngine(step_seconds=0.05)
    engine.hang = True
    run = start_worker(engine, lease_seconds=0.6)
    wait_for(lambda: status(db, task_id) == contract.PROCESSING, what="the claim")
    with db.transaction() as session:  # the reaper and another worker took it meanwhile
        session.execute(update(Task).where(Task.id == task_id).values(worker_id="other"))
    with caplog.at_level(logging.WARNING, logger="kreaserve.worker"):
        wait_for(lambda: run.engine.cancelled, what="the cancel")
        wait_for(lambda: "lease lost" in caplog.text, what="the log line")
    task = task_row(db, task_id)
    assert (task.status, task.worker_id, task.result_keys) == (contract.PROCESSING, "other", None)


def test_a_stale_worker_never_touches_the_new_owners_result(
    db: Database,
    storage: LocalStorage,
    start_worker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Worker A freezes (think SIGSTOP) while its engine finishes; its lease runs out, B
    runs the task; A wakes up with its image: it drops it and says so, and B's URL works."""
    account_id, _ = new_account(db)
    task_id = create_task(db, account_id)
    engine_a = FakeEngine(png=b"A's image")
    engine_a.hold_results()
    a = start_worker(engine_a, lease_seconds=0.5)
    wait_for(engine_a.holding.is_set, what="A to freeze on its result")
    wait_for(lambda: task_queue.reap(db, 3) == 1, timeout=5, what="A's lease to expire")
    b = start_worker(FakeEngine(png=b"B's image"), lease_seconds=0.5)
    task = wait_status(db, task_id, contract.COMPLETED)
    (key,) = task.result_keys
    assert storage.path(key).read_bytes() == b"B's image"
    with caplog.at_level(logging.WARNING, logger="kreaserve"):
        engine_a.release_results()
        time.sleep(1.0)  # A handles its result in milliseconds
        b.worker.stop()
        a.worker.stop()
    task = task_row(db, task_id)
    assert task.status == contract.COMPLETED and task.result_keys == [key]
    assert storage.path(key) is not None, "the stale worker deleted the new owner's image"
    assert storage.path(key).read_bytes() == b"B's image"
    assert "dropped" in caplog.text, "the stale worker did not say it dropped its work"


# --- cancels, engine deaths, timeouts --------------------------------------------------------


def test_a_cancel_mid_batch_stops_that_task_only(db: Database, start_worker) -> None:
    account_id, _ = new_account(db)
    tasks = [create_task(db, account_id, seed=seed) for seed in (1, 2, 3)]
    run = start_worker(FakeEngine(step_seconds=0.15), batch_size=3)
    wait_for(lambda: task_row(db, tasks[1]).progress > 0, what="progress")
    task_queue.cancel(db, account_id, tasks[1])
    assert wait_status(db, tasks[1], contract.CANCELLED).billing_state == "released"
    for task_id in (tasks[0], tasks[2]):
        wait_status(db, task_id, contract.COMPLETED)
    assert len(run.engine.batches) == 1 and len(run.engine.batches[0].items) == 3


def test_an_engine_death_runs_the_task_again_on_a_fresh_engine(
    db: Database,
    start_worker,
) -> None:
    account_id, _ = new_account(db)
    task_id = create_task(db, account_id)
    run = start_worker(FakeEngine(step_seconds=0.1))
    wait_for(lambda: task_row(db, task_id).progress > 0, what="progress")
    run.engine.kill()
    task = wait_status(db, task_id, contract.COMPLETED)
    assert task.attempts == 2 and run.engine.starts == 2


def test_an_engine_that_died_while_idle_is_replaced_when_work_comes(
    db: Database,
    start_worker,
) -> None:
    run = start_worker()
    wait_for(lambda: run.engine.starts == 1)
    run.engine.kill()
    account_id, _ = new_account(db)
    task = wait_status(db, create_task(db, account_id), contract.COMPLETED)
    assert task.attempts == 2 and run.engine.starts == 2 and not run.fatal


def test_a_hung_generation_times_out_and_the_engine_is_replaced(
    db: Database,
    start_worker,
) -> None:
    account_id, _ = new_account(db)
    task_id = create_task(db, account_id)
    engine = FakeEngine()
    engine.hang = True
    run = start_worker(engine, task_timeout_seconds=1.0)
    task = wait_status(db, task_id, contract.FAILED)
    assert task.error_code == "generation_timeout" and task.billing_state == "released"
    engine.hang = False
    second = create_task(db, account_id, seed=9)
    wait_status(db, second, contract.COMPLETED)
    assert run.engine.starts == 2 and run.engine.stops >= 1


def test_an_unknown_message_from_the_engine_is_an_error(
    db: Database,
    start_worker,
) -> None:
    account_id, _ = new_account(db)
    task_id = create_task(db, account_id)
    engine = FakeEngine()
    engine.hang = True
    run = start_worker(engine)
    wait_for(lambda: status(db, task_id) == contract.PROCESSING, what="the claim")
    run.engine.send(object())
    wait_for(lambda: run.fatal, what="on_fatal")
    assert "object" in run.fatal[0]


def test_stop_hands_running_tasks_back_to_the_queue(db: Database, start_worker) -> None:
    account_id, _ = new_account(db)
    task_id = create_task(db, account_id)
    engine = FakeEngine(step_seconds=0.05)
    engine.hang = True
    run = start_worker(engine)
    wait_for(lambda: status(db, task_id) == contract.PROCESSING, what="the claim")
    stopper = threading.Thread(target=run.worker.stop)
    stopper.start()
    stopper.join(30)
    task = task_row(db, task_id)
    assert (task.status, task.worker_id) == (contract.PENDING, None)


# --- over a real pipe: the real EngineProcess and Child, the child on a thread ---------------


def test_a_result_larger_than_the_pipe_buffer_arrives_whole(
    db: Database,
    storage: LocalStorage,
    start_worker,
) -> None:
    """A 2048x2048 noise PNG is ~12 MB, some 200 times a pipe's 64 KiB buffer."""
    from PIL import Image

    account_id, _ = new_account(db)
    params = task_queue.NewTask(
        prompt="a fox", size="1:1", quality="2K", seed=3, nsfw_check=False, callback_url=None
    )
    task_id = task_queue.create(db, account_id, None, "default", params, PRICE).id
    engine = ThreadEngine(FakePipeline())
    start_worker(engine)
    task = wait_status(db, task_id, contract.COMPLETED, timeout=30)
    path = storage.path(task.result_keys[0])
    assert path.stat().st_size > 100 * 65536
    with Image.open(path) as image:
        assert image.size == (2048, 2048)
        image.load()


def test_the_engine_process_stops_a_child_that_breaks_the_protocol() -> None:
    def serve(conn: Connection) -> None:
        conn.send(m.Ready())
        conn.recv()  # the batch
        conn.send({"not": "a message"})
        conn.recv()  # until the engine process shuts the pipe

    engine = ThreadEngine(serve=serve)
    engine.start(5)
    engine.submit(
        m.GenerateBatch(items=(m.Item(engine.new_job_id(), "a fox", 1),), width=256, height=256)
    )
    with pytest.raises(EngineProtocolError, match="unknown message .*not"):
        while True:
            engine.next_message(1)
    assert not engine.alive


def test_a_child_that_breaks_the_protocol_while_loading_does_not_start() -> None:
    engine = ThreadEngine(serve=lambda conn: conn.send("hello"))
    with pytest.raises(EngineStartError, match="instead of Ready"):
        engine.start(5)


# --- idle: back off, wake on work -----------------------------------------------------


def _ready(run) -> None:  # noqa: ANN001
    wait_for(lambda: run.worker.heartbeat.state == WorkerState.READY, 15, "the engine")


def test_an_idle_worker_polls_the_queue_rarely(
    start_worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the 0.2 s base the old loop made ~20 claims in 4 idle seconds; backing off to
    1 s it makes about 5 (0.2 + 0.4 + 0.8 + 1 + 1 ...)."""
    calls = []
    real = task_queue.claim_batch

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(time.monotonic())
        return real(*args, **kwargs)

    monkeypatch.setattr(task_queue, "claim_batch", counting)
    run = start_worker(worker_poll_seconds=0.2, worker_idle_poll_max_seconds=1.0)
    _ready(run)
    time.sleep(4)
    assert 2 <= len(calls) <= 9, f"{len(calls)} claims in 4 idle seconds"


def test_a_task_created_in_the_process_is_claimed_without_waiting_for_the_poll(
    db: Database, start_worker
) -> None:
    """The poll is 3 s; a task created 0.3 s after the worker's first poll is claimed
    well before the next one."""
    account_id, _ = new_account(db)
    run = start_worker(worker_poll_seconds=3.0, worker_idle_poll_max_seconds=3.0)
    _ready(run)
    time.sleep(0.3)
    created = time.monotonic()
    task_id = create_task(db, account_id)
    wait_for(lambda: status(db, task_id) != contract.PENDING, 10, "the claim")
    assert time.monotonic() - created < 1.5
