"""What every command group of the CLI shares: the Typer app, the settings and database
options, one-line failures, `--json` output, and the connection to a running server."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kreaserve.config import Settings

if TYPE_CHECKING:
    from kreaserve.client import Client
    from kreaserve.db import Database
    from kreaserve.storage import Storage


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kreaserve {metadata.version('kreaserve')}")
        raise typer.Exit()


app = typer.Typer(
    help="kreaserve: self-hosted Krea 2 Turbo behind the krea-2-turbo task API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """kreaserve: self-hosted Krea 2 Turbo behind the krea-2-turbo task API."""


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
AsJson = Annotated[
    bool, typer.Option("--json", help="Print one JSON document (for scripts) instead of text.")
]
ServerUrl = Annotated[str, typer.Option(envvar="KREASERVE_URL", help="Server base URL.")]
ApiKey = Annotated[str | None, typer.Option(envvar="KREASERVE_API_KEY", help="API key.")]
DEFAULT_URL = "http://127.0.0.1:8000"


def fail(message: str) -> typer.Exit:
    """Print `error: message` on stderr; raise what this returns (exit status 1)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


def print_json(document: Any) -> None:
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False))


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


def open_database(settings: Settings) -> Database:
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


def database_of(data_dir: Path | None, database_url: str | None) -> Database:
    """The database the flags and environment name, migrated."""
    return open_database(settings_from(data_dir=data_dir, database_url=database_url))


def open_checked_storage(settings: Settings) -> Storage:
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


@contextmanager
def connect(url: str, api_key: str | None) -> Iterator[Client]:
    """An SDK client for a running server, for `generate` and `tasks`: no key, an API
    error or an unreachable server ends the command in one line that says why."""
    import httpx

    from kreaserve.client import Client, KreaserveError

    if not api_key:
        raise fail(
            "no API key: pass --api-key or set KREASERVE_API_KEY "
            "(create one with `kreaserve keys create`)"
        )
    with Client(url, api_key) as client:
        try:
            yield client
        except KreaserveError as exc:
            raise fail(reason(exc)) from None
        except httpx.HTTPError as exc:
            raise fail(f"cannot reach {url}: {reason(exc)}") from None


def reason(exc: BaseException) -> str:
    """One line for an SDK error: the contract's message and code, or the network's."""
    from kreaserve.client import KreaserveError

    if isinstance(exc, KreaserveError):
        return f"{exc.message} ({exc.code}{', ' + exc.param if exc.param else ''})"
    return str(exc) or type(exc).__name__
