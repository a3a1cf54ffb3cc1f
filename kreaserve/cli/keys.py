"""`kreaserve keys`: create, list and revoke API keys in the database, through the same
service functions and request rules as the admin API (`kreaserve.admin_service`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from kreaserve.cli.common import AsJson, DatabaseUrl, DataDir, app, database_of, fail, print_json

keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

#: A request field of the admin API -> the CLI's word for it, in error messages.
FLAGS = {"name": "--name", "credits": "--credits"}


def validated(model: Any, payload: dict[str, Any], flags: dict[str, str] = FLAGS) -> Any:
    """`payload` checked by the admin API's own body model; a refusal names the flag."""
    from kreaserve import schemas

    try:
        return schemas.parse_body(model, payload)
    except schemas.RequestError as exc:
        flag = flags.get(exc.param or "", exc.param or "")
        raise fail(f"{flag}: {exc.message}" if flag else exc.message) from None


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
    as_json: AsJson = False,
) -> None:
    """Create a key (and an account unless --account is given). The key is printed once,
    alone on standard output; only its hash is stored."""
    from kreaserve import admin_service, ledger, presenters, schemas

    if credits < 0:
        raise fail("--credits must not be negative")
    body = validated(schemas.KeyCreate, {"name": name})
    db = database_of(data_dir, database_url)
    try:
        issued = admin_service.issue_key(db, account, body.name, ledger.to_units(credits))
    except admin_service.AccountNotFound:
        raise fail(f"no account {account}") from None
    balance = ledger.to_credits(issued.standing.balance_units)
    if as_json:
        print_json(
            {
                **presenters.new_key_object(issued.new, issued.key),
                "account_id": issued.key.account_id,
                "balance": balance,
            }
        )
        return
    typer.echo(
        f"Created key '{body.name}' ({issued.new.prefix}...) for account "
        f"{issued.key.account_id}, balance {balance} credits. It is shown only once:",
        err=True,
    )
    typer.echo(issued.new.secret)


@keys_app.command("list")
def keys_list(
    data_dir: DataDir = None, database_url: DatabaseUrl = None, as_json: AsJson = False
) -> None:
    """List keys (prefixes only, never the secrets)."""
    from kreaserve import admin_service, presenters

    keys = admin_service.all_keys(database_of(data_dir, database_url))
    if as_json:
        data = [{**presenters.key_object(key), "account_id": key.account_id} for key in keys]
        print_json({"object": "list", "data": data})
        return
    for key in keys:
        state = "revoked" if key.revoked_at else "active"
        typer.echo(f"{key.id}\t{key.prefix}...\taccount {key.account_id}\t{state}\t{key.name}")


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="Key id or shown prefix.")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Revoke a key; servers stop taking it within KREASERVE_AUTH_CACHE_SECONDS."""
    from kreaserve import admin_service

    try:
        admin_service.revoke_live_key(database_of(data_dir, database_url), key)
    except admin_service.KeyNotFound:
        raise fail(f"no active key {key}") from None
    if as_json:
        print_json({"revoked": key})
        return
    typer.echo(f"revoked {key}")
