"""`kreaserve db`: the database schema (serve and worker also migrate on start)."""

from __future__ import annotations

import typer

from kreaserve.cli.common import (
    AsJson,
    DatabaseUrl,
    DataDir,
    app,
    open_database,
    print_json,
    settings_from,
)

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(
    data_dir: DataDir = None, database_url: DatabaseUrl = None, as_json: AsJson = False
) -> None:
    """Apply the schema migrations."""
    from kreaserve.db.migrate import head_revision

    settings = settings_from(data_dir=data_dir, database_url=database_url)
    open_database(settings).dispose()
    where = settings.resolved_database_url.split("@")[-1]
    revision = head_revision()
    if as_json:
        print_json({"database": where, "revision": revision})
        return
    typer.echo(f"database at head ({revision}): {where}")
