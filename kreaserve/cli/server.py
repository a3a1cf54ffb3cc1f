"""`kreaserve serve` (the API, by default with a worker) and `kreaserve worker` (a worker
only, for a fleet): the long-running processes."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer

from kreaserve.cli.common import (
    DatabaseUrl,
    DataDir,
    Weights,
    app,
    fail,
    open_checked_storage,
    open_database,
    settings_from,
    setup_logging,
)


def bind_listener(host: str, port: int):  # type: ignore[no-untyped-def]
    """The server's listening socket, bound before anything slow starts, so that a port in
    use stops `serve` at once instead of after the engine has loaded."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise fail(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} "
            "(choose another with --port or KREASERVE_PORT)"
        ) from None
    sock.set_inheritable(True)
    return sock


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="[env KREASERVE_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="[env KREASERVE_PORT]")] = None,
    weights: Weights = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    public_url: Annotated[
        str | None, typer.Option(help="Base of result URLs [env KREASERVE_PUBLIC_URL]")
    ] = None,
    worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="Run an engine worker in this process too.")
    ] = True,
) -> None:
    """Run the API (and, by default, a worker with its engine) on one machine."""
    from kreaserve.malloc_arenas import limit_arenas

    limit_arenas()  # before any thread starts
    import uvicorn

    from kreaserve.api.app import create_app
    from kreaserve.http_server import make_server
    from kreaserve.maintenance import Maintenance
    from kreaserve.service_secrets import SharedSecretError, url_signing_key
    from kreaserve.storage import ResultLinks

    settings = settings_from(
        host=host,
        port=port,
        weights=weights,
        data_dir=data_dir,
        database_url=database_url,
        public_url=public_url,
    )
    setup_logging(settings)
    listener = bind_listener(settings.host, settings.port)
    settings.port = listener.getsockname()[1]  # --port 0: the port the system chose
    storage = open_checked_storage(settings)
    db = open_database(settings)
    try:
        url_secret = url_signing_key(settings, db)
    except SharedSecretError as exc:
        raise fail(str(exc)) from None
    # Only once the store, the database and the key are good (a refusal stays one line);
    # uvicorn does not say where it listens when handed a socket.
    logging.getLogger("kreaserve").info(
        "listening on http://%s:%d (the API answers once started)", settings.host, settings.port
    )
    server: uvicorn.Server | None = None

    def on_fatal(_message: str) -> None:
        if server is not None:
            server.should_exit = True

    background: list[Any] = [Maintenance(settings, db, storage)]
    embedded = None
    if worker and settings.embedded_worker:
        from kreaserve.worker import WorkerGroup

        embedded = WorkerGroup(settings, db, storage, on_fatal=on_fatal)
        background.append(embedded)
    if settings.callback_dispatch:
        from kreaserve.callbacks.dispatcher import CallbackDispatcher

        links = ResultLinks.for_settings(settings, storage, url_secret)
        background.append(CallbackDispatcher(settings, db, links))
    application = create_app(settings, db=db, storage=storage, background=background)
    server = make_server(application, settings)
    server.run(sockets=[listener])
    if embedded is not None and embedded.fatal_message:
        raise fail(embedded.fatal_message)
    if not server.started:
        raise fail(f"could not listen on {settings.host}:{settings.port}")


@app.command("worker")
def worker_command(
    weights: Weights = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=0,
            max=65535,
            help="Serve this worker's Prometheus metrics (GET /metrics) on this port, on the "
            "address KREASERVE_HOST.",
        ),
    ] = None,
) -> None:
    """Run a worker only: claims tasks from the shared database and runs the engine."""
    import signal

    from kreaserve.maintenance import Maintenance
    from kreaserve.worker import WorkerGroup

    settings = settings_from(weights=weights, data_dir=data_dir, database_url=database_url)
    setup_logging(settings)
    storage = open_checked_storage(settings)
    db = open_database(settings)
    if metrics_port is not None:
        serve_worker_metrics(settings.host, metrics_port, db)
    runner = WorkerGroup(settings, db, storage)
    maintenance = Maintenance(settings, db, storage)
    signal.signal(signal.SIGTERM, lambda *_: runner.request_stop())
    maintenance.start()
    try:
        status = runner.run_forever()
    finally:
        maintenance.stop()
    if status:
        raise fail(runner.fatal_message or "the worker stopped")


def serve_worker_metrics(host: str, port: int, db: Any) -> None:
    """The worker's /metrics on a port of its own (prometheus-client's server thread)."""
    from prometheus_client import start_http_server

    from kreaserve import metrics

    try:
        server, _thread = start_http_server(port, addr=host, registry=metrics.registry_for(db))
    except OSError as exc:
        raise fail(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc} "
            "(choose another --metrics-port)"
        ) from None
    logging.getLogger("kreaserve.worker").info(
        "metrics at http://%s:%d/metrics", host, server.server_address[1]
    )
