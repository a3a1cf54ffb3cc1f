"""`kreaserve accounts` and `kreaserve credits`: the operator's account commands, through
the admin API's service functions and body rules (`kreaserve.admin_service`,
`kreaserve.schemas`), so the CLI and /admin/v1 refuse and change exactly the same things."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from kreaserve.cli.common import AsJson, DatabaseUrl, DataDir, app, database_of, fail, print_json
from kreaserve.cli.keys import validated

accounts_app = typer.Typer(help="Create, inspect and limit accounts.", no_args_is_help=True)
credits_app = typer.Typer(help="Grant and inspect credits.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
app.add_typer(credits_app, name="credits")

#: The admin API's body fields -> the CLI's flags, for error messages.
FLAGS = {
    "name": "--name",
    "credits": "--credits",
    "user_group": "--group",
    "requests_per_minute": "--rpm",
    "max_tasks_in_flight": "--in-flight",
    "daily_spend_cap": "--daily-cap",
    "amount": "AMOUNT",
    "note": "--note",
}
#: `--clear` values -> the limit they clear.
CLEARABLE = {
    "rpm": "requests_per_minute",
    "in-flight": "max_tasks_in_flight",
    "daily-cap": "daily_spend_cap",
}

Group = Annotated[str | None, typer.Option("--group", help="User group (prices).")]
Rpm = Annotated[int | None, typer.Option("--rpm", min=1, help="Requests per minute per key.")]
InFlight = Annotated[
    int | None, typer.Option("--in-flight", min=1, help="Unfinished tasks per key.")
]
DailyCap = Annotated[
    float | None,
    typer.Option("--daily-cap", min=0.0001, help="Credits the account may spend per UTC day."),
]


def limits_payload(
    group: str | None,
    rpm: int | None,
    in_flight: int | None,
    daily_cap: float | None,
    clear: list[str],
) -> dict[str, Any]:
    """The admin API's limit fields for the flags given (a cleared one is null)."""
    payload: dict[str, Any] = {
        name: value
        for name, value in (
            ("user_group", group),
            ("requests_per_minute", rpm),
            ("max_tasks_in_flight", in_flight),
            ("daily_spend_cap", daily_cap),
        )
        if value is not None
    }
    for item in clear:
        if item not in CLEARABLE:
            raise fail(f"--clear takes one of {', '.join(CLEARABLE)}")
        payload[CLEARABLE[item]] = None
    return payload


def show(summary: dict[str, Any], as_json: bool) -> None:
    """An account: its JSON, or one line of what an operator looks at first."""
    if as_json:
        print_json(summary)
        return
    limits = ", ".join(
        f"{name} {summary[name]}"
        for name in ("requests_per_minute", "max_tasks_in_flight", "daily_spend_cap")
        if summary.get(name) is not None
    )
    typer.echo(
        f"account {summary['id']} '{summary['name']}': balance {summary['balance']}, "
        f"reserved {summary['reserved']}, group {summary['user_group']}, "
        f"keys {summary['keys']['active']} active of {summary['keys']['total']}"
        + (f"; {limits}" if limits else "")
    )


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
    as_json: AsJson = False,
) -> None:
    """Create an account (give it keys with `kreaserve keys create --account ID`)."""
    from kreaserve import admin_service, ledger, schemas

    payload = {
        "name": name,
        "credits": credits,
        **limits_payload(group, rpm, in_flight, daily_cap, []),
    }
    body = validated(schemas.AccountCreate, payload, FLAGS)
    summary = admin_service.create_account(
        database_of(data_dir, database_url),
        body.name,
        ledger.to_units(body.credits),
        admin_service.limit_fields(body),
    )
    show(summary, as_json)


@accounts_app.command("list")
def accounts_list(
    data_dir: DataDir = None, database_url: DatabaseUrl = None, as_json: AsJson = False
) -> None:
    """Every account: standing, group, limits, keys."""
    from kreaserve import admin_service

    summaries = admin_service.list_accounts(database_of(data_dir, database_url))
    if as_json:
        print_json({"object": "list", "data": summaries})
        return
    for summary in summaries:
        show(summary, as_json=False)


@accounts_app.command("show")
def accounts_show(
    account: int,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """One account."""
    from kreaserve import admin_service

    try:
        summary = admin_service.account(database_of(data_dir, database_url), account)
    except admin_service.AccountNotFound:
        raise fail(f"no account {account}") from None
    show(summary, as_json)


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
    as_json: AsJson = False,
) -> None:
    """Change an account's group or limits."""
    from kreaserve import admin_service, schemas

    payload = limits_payload(group, rpm, in_flight, daily_cap, clear)
    body = validated(schemas.AccountLimits, payload, FLAGS)
    try:
        summary = admin_service.update_account(
            database_of(data_dir, database_url), account, admin_service.limit_fields(body)
        )
    except admin_service.AccountNotFound:
        raise fail(f"no account {account}") from None
    show(summary, as_json)


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
    as_json: AsJson = False,
) -> None:
    """Add credits to an account (with --adjust, correct them either way)."""
    from kreaserve import admin_service, ledger, schemas

    kind = "adjust" if adjust else "grant"
    body = validated(schemas.CreditsChange, {"amount": amount, "kind": kind, "note": note}, FLAGS)
    try:
        summary = admin_service.change_credits(
            database_of(data_dir, database_url),
            account,
            ledger.to_units(body.amount),
            body.kind,
            body.note or ("adjust" if adjust else "credits grant"),
        )
    except admin_service.GrantNotPositive:
        raise fail("a grant must be positive; take credits away with --adjust") from None
    except admin_service.AccountNotFound:
        raise fail(f"no account {account}") from None
    except admin_service.CreditsRefused as exc:
        raise fail(str(exc)) from None
    if as_json:
        print_json(summary)
        return
    typer.echo(f"account {account}: balance {summary['balance']}, reserved {summary['reserved']}")
