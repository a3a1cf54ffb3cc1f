"""`kreaserve moderation`: the content checks' own tools."""

from __future__ import annotations

import typer

from kreaserve.cli.common import app

moderation_app = typer.Typer(help="Content moderation.", no_args_is_help=True)
app.add_typer(moderation_app, name="moderation")


@moderation_app.command(
    "eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def moderation_eval(ctx: typer.Context) -> None:
    """Precision and recall per category, basic and strict, on the labelled evaluation set
    (and the check's latency). Options go to the evaluation: --help lists them."""
    from kreaserve.moderation import evaluate

    raise typer.Exit(evaluate.main(list(ctx.args)))
