"""The `kreaserve` command: serve, worker, keys, credits, generate, db.

Every command builds the same Settings (flags override KREASERVE_* variables), so a
command run beside a server works on that server's database.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from kreaserve.config import Settings

app = typer.Typer(
    help="kreaserve: self-hosted Krea 2 Turbo behind the krea-2-turbo task API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
credits_app = typer.Typer(help="Grant and inspect credits.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
accounts_app = typer.Typer(help="Create, inspect and limit accounts.", no_args_is_help=True)
moderation_app = typer.Typer(help="Content moderation.", no_args_is_help=True)
app.add_typer(moderation_app, name="moderation")
app.add_typer(accounts_app, name="accounts")
app.add_typer(keys_app, name="keys")
app.add_typer(credits_app, name="credits")
app.add_typer(db_app, name="db")

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="[env KREASERVE_DATA_DIR]")]
DatabaseUrl = Annotated[
    str | None, typer.Option("--database-url", help="[env KREASERVE_DATABASE_URL]")
]
Weights = Annotated[
    str | None,
    typer.Option(
        "--weights",
        help="krea/Krea-2-Turbo, a local directory, tiny-random or auto [env KREASERVE_WEIGHTS]",
    ),
]


def settings_from(**overrides: Any) -> Settings:
    """Settings from the environment, with the flags that were given on top; an invalid
    setting stops the command with one line per bad variable."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from kreaserve.config_errors import explain

    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except (ValidationError, SettingsError) as exc:
        for line in explain(Settings, exc, flags=given):
            typer.secho(f"error: {line}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def setup_logging(settings: Settings) -> None:
    """Logs and, when KREASERVE_TRACING asks for it, OpenTelemetry span export."""
    from kreaserve import logs, tracing

    logs.setup(settings.log_format, settings.log_level)
    logging.getLogger("botocore").setLevel(logging.WARNING)  # not "found credentials..."
    try:
        tracing.setup(settings.tracing)
    except tracing.TracingUnavailable as exc:
        raise fail(str(exc)) from None


def open_database(settings: Settings):  # type: ignore[no-untyped-def]
    """Close the data folder to other users, migrate (idempotent) and connect."""
    import sqlalchemy.exc

    from kreaserve.db import Database, upgrade
    from kreaserve.private import private_dir

    private_dir(settings.data_dir)
    where = settings.resolved_database_url.split("@")[-1]
    try:
        upgrade(settings.resolved_database_url)
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.ArgumentError) as exc:
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise fail(
            f"cannot open the database {where}: {first[0] if first else exc} "
            "(check KREASERVE_DATABASE_URL)"
        ) from None
    return Database(settings.resolved_database_url)


def fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


def open_checked_storage(settings: Settings):  # type: ignore[no-untyped-def]
    """The configured store, probed: a missing bucket, refused credentials or an
    unreachable endpoint stop the command with one line; the S3 lifecycle rule is set."""
    from kreaserve.storage import StorageError, open_storage

    storage = open_storage(settings)
    try:
        storage.check()
    except StorageError as exc:
        raise fail(str(exc)) from None
    if settings.s3_bucket and settings.s3_lifecycle:
        from kreaserve.storage.s3 import S3Storage

        assert isinstance(storage, S3Storage)
        storage.ensure_lifecycle(settings.result_ttl_seconds)
    return storage


# --- serve / worker ------------------------------------------------------------------------


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


# --- keys and credits ----------------------------------------------------------------------


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A label for the key.")],
    credits: Annotated[float, typer.Option(help="Opening credits of a new account.")] = 0.0,
    account: Annotated[
        int | None,
        typer.Option(help="Add the key to this existing account instead of creating one."),
    ] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create a key (and an account unless --account is given). The key is printed once,
    alone on standard output; only its hash is stored."""
    from kreaserve import accounts, ledger
    from kreaserve.db.models import Account

    if credits < 0:
        raise fail("--credits must not be negative")
    settings = settings_from(data_dir=data_dir, database_url=database_url)
    db = open_database(settings)
    with db.transaction() as session:
        if account is None:
            account_id = accounts.create_account(session, name, ledger.to_units(credits))
        else:
            if session.get(Account, account) is None:
                raise fail(f"no account {account}")
            account_id = account
            if credits:
                ledger.grant(session, account_id, ledger.to_units(credits), note="keys create")
        new = accounts.create_key(session, account_id, name)
        standing = ledger.balance(session, account_id)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "key": new.secret,
                    "key_id": new.key_id,
                    "prefix": new.prefix,
                    "account_id": account_id,
                    "balance": ledger.to_credits(standing.balance_units),
                }
            )
        )
        return
    typer.echo(
        f"Created key '{name}' ({new.prefix}...) for account {account_id}, balance "
        f"{ledger.to_credits(standing.balance_units)} credits. It is shown only once:",
        err=True,
    )
    typer.echo(new.secret)


@keys_app.command("list")
def keys_list(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """List keys (prefixes only)."""
    from sqlalchemy import select

    from kreaserve.db.models import ApiKey

    db = open_database(settings_from(data_dir=data_dir, database_url=database_url))
    with db.transaction() as session:
        for key in session.execute(select(ApiKey).order_by(ApiKey.id)).scalars():
            state = "revoked" if key.revoked_at else "active"
            typer.echo(f"{key.id}\t{key.prefix}...\taccount {key.account_id}\t{state}\t{key.name}")


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="Key id or shown prefix.")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a key; it stops working at once."""
    from kreaserve import accounts

    db = open_database(settings_from(data_dir=data_dir, database_url=database_url))
    with db.transaction() as session:
        if not accounts.revoke_key(session, key):
            raise fail(f"no active key {key}")
    typer.echo(f"revoked {key}")


@credits_app.command("grant")
def credits_grant(
    account: int,
    amount: float,
    adjust: Annotated[
        bool,
        typer.Option(
            "--adjust", help="Record an operator correction (either sign) instead of a grant."
        ),
    ] = False,
    note: Annotated[str | None, typer.Option(help="Why, kept in the ledger.")] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Add credits to an account (with --adjust, correct them either way)."""
    from kreaserve import ledger
    from kreaserve.db.models import Account

    if amount == 0 or (amount < 0 and not adjust):
        raise fail("a grant must be positive; take credits away with --adjust")
    db = open_database(settings_from(data_dir=data_dir, database_url=database_url))
    with db.transaction() as session:
        if session.get(Account, account) is None:
            raise fail(f"no account {account}")
        try:
            ledger.grant(
                session,
                account,
                ledger.to_units(amount),
                note=(note or ("adjust" if adjust else "credits grant"))[:200],
                kind=ledger.ADJUST if adjust else ledger.GRANT,
            )
        except ValueError as exc:
            raise fail(str(exc)) from None
        standing = ledger.balance(session, account)
    typer.echo(
        f"account {account}: balance {ledger.to_credits(standing.balance_units)}, "
        f"reserved {ledger.to_credits(standing.reserved_units)}"
    )


Group = Annotated[str | None, typer.Option("--group", help="User group (prices).")]
Rpm = Annotated[int | None, typer.Option("--rpm", min=1, help="Requests per minute per key.")]
InFlight = Annotated[
    int | None, typer.Option("--in-flight", min=1, help="Unfinished tasks per key.")
]
DailyCap = Annotated[
    float | None,
    typer.Option("--daily-cap", min=0.0001, help="Credits the account may spend per UTC day."),
]


def limit_values(
    group: str | None,
    rpm: int | None,
    in_flight: int | None,
    daily_cap: float | None,
    clear: list[str],
) -> dict[str, Any]:
    from kreaserve import ledger

    values: dict[str, Any] = {}
    if group is not None:
        values["user_group"] = group
    if rpm is not None:
        values["requests_per_minute"] = rpm
    if in_flight is not None:
        values["max_tasks_in_flight"] = in_flight
    if daily_cap is not None:
        values["daily_spend_cap_units"] = ledger.to_units(daily_cap)
    names = {
        "rpm": "requests_per_minute",
        "in-flight": "max_tasks_in_flight",
        "daily-cap": "daily_spend_cap_units",
    }
    for item in clear:
        if item not in names:
            raise fail(f"--clear takes one of {', '.join(names)}")
        values[names[item]] = None
    return values


@accounts_app.command("create")
def accounts_create(
    name: Annotated[str, typer.Option(help="Who the account is for.")],
    credits: Annotated[float, typer.Option(min=0, help="Opening credits.")] = 0.0,
    group: Group = None,
    rpm: Rpm = None,
    in_flight: InFlight = None,
    daily_cap: DailyCap = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create an account (give it keys with `kreaserve keys create --account ID`)."""
    from kreaserve import accounts, ledger

    db = open_database(settings_from(data_dir=data_dir, database_url=database_url))
    with db.transaction() as session:
        account_id = accounts.create_account(session, name, ledger.to_units(credits))
        accounts.update_account(
            session, account_id, **limit_values(group, rpm, in_flight, daily_cap, [])
        )
        summary = accounts.account_summary(session, account_id)
    typer.echo(json.dumps(summary))


@accounts_app.command("list")
def accounts_list(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """One JSON line per account: standing, group, limits, keys."""
    from kreaserve import accounts

    db = open_database(settings_from(data_dir=data_dir, database_url=database_url))
    with db.transaction() as session:
        for account_id in accounts.all_account_ids(session):
            typer.echo(json.dumps(accounts.account_summary(session, account_id)))


@accounts_app.command("show")
def accounts_show(account: int, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """One account as JSON."""
    from kreaserve import accounts

    db = open_database(settings_from(data_dir=data_dir, database_url=database_url))
    with db.transaction() as session:
        summary = accounts.account_summary(session, account)
    if summary is None:
        raise fail(f"no account {account}")
    typer.echo(json.dumps(summary, indent=2))


@accounts_app.command("update")
def accounts_update(
    account: int,
    group: Group = None,
    rpm: Rpm = None,
    in_flight: InFlight = None,
    daily_cap: DailyCap = None,
    clear: Annotated[
        list[str],
        typer.Option("--clear", help="Remove a limit: rpm, in-flight or daily-cap (repeatable)."),
    ] = [],  # noqa: B006
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Change an account's group or limits."""
    from kreaserve import accounts

    values = limit_values(group, rpm, in_flight, daily_cap, clear)
    db = open_database(settings_from(data_dir=data_dir, database_url=database_url))
    with db.transaction() as session:
        if not accounts.update_account(session, account, **values):
            raise fail(f"no account {account}")
        summary = accounts.account_summary(session, account)
    typer.echo(json.dumps(summary))


@moderation_app.command(
    "eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def moderation_eval(ctx: typer.Context) -> None:
    """Precision and recall per category, basic and strict, on the labelled evaluation set
    (and the check's latency). Options go to the evaluation: --help lists them."""
    from kreaserve.moderation import evaluate

    raise typer.Exit(evaluate.main(list(ctx.args)))


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Apply the schema migrations."""
    settings = settings_from(data_dir=data_dir, database_url=database_url)
    open_database(settings).dispose()
    typer.echo(f"database at head: {settings.resolved_database_url.split('@')[-1]}")


# --- generate ------------------------------------------------------------------------------


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="What to draw.")],
    size: Annotated[str, typer.Option(help="Aspect ratio, e.g. 16:9.")] = "1:1",
    quality: Annotated[str, typer.Option(help="1K or 2K.")] = "1K",
    seed: Annotated[int | None, typer.Option(help="0..1048576; random when absent.")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to save the PNG.")] = Path(
        "image.png"
    ),
    url: Annotated[str, typer.Option(envvar="KREASERVE_URL", help="Server base URL.")] = (
        "http://127.0.0.1:8000"
    ),
    api_key: Annotated[
        str | None, typer.Option(envvar="KREASERVE_API_KEY", help="API key.")
    ] = None,
) -> None:
    """Generate one image through a running server, with a progress bar, and save it."""
    from kreaserve.client import Client, KreaserveError

    if not api_key:
        raise fail(
            "no API key: pass --api-key or set KREASERVE_API_KEY "
            "(create one with `kreaserve keys create`)"
        )
    check_output(output)
    import httpx

    with Client(url, api_key) as client:
        try:
            task = client.create(prompt, size=size, quality=quality, seed=seed)
        except KreaserveError as exc:
            raise fail(
                f"{exc.message} ({exc.code}{', ' + exc.param if exc.param else ''})"
            ) from None
        except httpx.HTTPError as exc:
            raise fail(f"cannot reach {url}: {exc or type(exc).__name__}") from None
        task_id = task.id
        try:
            task = wait_with_progress(client, task)
            if task.status != "completed" or not task.results:
                error = task.error
                raise fail(
                    f"task {task_id} {task.status}: {error.message if error else ''} "
                    f"({error.code if error else ''})"
                )
            client.download(task.results[0], output)
        except KeyboardInterrupt:
            try:
                client.cancel(task_id)
            except (httpx.HTTPError, KreaserveError):
                typer.echo(f"could not cancel {task_id}: the server did not answer", err=True)
                raise typer.Exit(130) from None
            typer.echo(f"cancelled {task_id}", err=True)
            raise typer.Exit(130) from None
        except (httpx.HTTPError, KreaserveError, OSError) as exc:
            reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            raise fail(
                f"lost task {task_id}: {reason}. It may still finish: query it with "
                f"GET {url}/v1/tasks/{task_id}"
            ) from None
    typer.echo(f"saved {output} (task {task_id}, seed {task.seed})")


def check_output(output: Path) -> None:
    """Refuse, before any task is created (and charged), an output that cannot be saved:
    the server returns PNG, so the name must end in .png; a missing folder is created."""
    if output.suffix.lower() != ".png":
        raise fail(
            f"-o {output}: the server returns PNG images, so the file name must end "
            "in .png (JPEG and WebP output are not supported yet)"
        )
    if output.is_dir():
        raise fail(f"-o {output} is a folder; give a file name ending in .png")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(
            f"-o {output}: cannot create the folder {output.parent}: {exc.strerror or exc}"
        ) from None
    import os

    if not os.access(output.parent, os.W_OK):
        raise fail(f"-o {output}: the folder {output.parent} is not writable")


def wait_with_progress(client: Any, task: Any) -> Any:
    """Poll the task to its end, drawing a progress bar."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        line = bar.add_task(task.status, total=100)

        def update(current: Any) -> None:
            bar.update(line, completed=current.progress, description=current.status)

        return client.wait(task.id, poll_interval=0.25, on_update=update)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
