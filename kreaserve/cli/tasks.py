"""`kreaserve tasks`: list, show, wait for and cancel one's tasks on a running server,
through the SDK (`kreaserve.client`) with an API key, as `generate` does (`connect`)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from kreaserve.cli.common import (
    DEFAULT_URL,
    ApiKey,
    AsJson,
    ServerUrl,
    app,
    connect,
    print_json,
)
from kreaserve.cli.follow import ReconnectFor, follow

tasks_app = typer.Typer(
    help="List, show, wait for and cancel your tasks on a running server.", no_args_is_help=True
)
app.add_typer(tasks_app, name="tasks")

TaskId = Annotated[str, typer.Argument(help="The task's id (task-unified-...).")]


def line(task: Any) -> str:
    """A task on one line: id, status, progress, creation time, seed, and what ended it."""
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(task.created))
    end = ""
    if task.error:
        end = f"\t{task.error.code}: {task.error.message}"
    elif task.results:
        end = f"\t{task.results[0]}"
    return f"{task.id}\t{task.status}\t{task.progress}%\t{created}\tseed {task.seed}{end}"


def output(task: Any, as_json: bool) -> None:
    if as_json:
        print_json(task.model_dump(mode="json"))
    else:
        typer.echo(line(task))


@tasks_app.command("list")
def tasks_list(
    status: Annotated[
        str | None,
        typer.Option(help="Only tasks in this state: pending, processing, completed, ..."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="Tasks per page.")] = 20,
    cursor: Annotated[
        str | None, typer.Option(help="Continue after a page (its next_cursor).")
    ] = None,
    url: ServerUrl = DEFAULT_URL,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """One page of your tasks, newest first (the next page's cursor goes to stderr)."""
    with connect(url, api_key) as client:
        page = client.list_tasks(limit=limit, status=status, cursor=cursor)
    if as_json:
        print_json(page.model_dump(mode="json"))
        return
    for task in page.data:
        typer.echo(line(task))
    if page.has_more:
        typer.echo(f"more: --cursor {page.next_cursor}", err=True)


@tasks_app.command("get")
def tasks_get(
    task_id: TaskId, url: ServerUrl = DEFAULT_URL, api_key: ApiKey = None, as_json: AsJson = False
) -> None:
    """One task as it is now."""
    with connect(url, api_key) as client:
        task = client.get(task_id)
    output(task, as_json)


@tasks_app.command("wait")
def tasks_wait(
    task_id: TaskId,
    timeout: Annotated[float, typer.Option(min=0, help="Give up after this many seconds.")] = 3600,
    reconnect_for: ReconnectFor = 120,
    url: ServerUrl = DEFAULT_URL,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Wait until the task ends; exit status 0 when it completed, 1 when it failed or was
    cancelled, 3 on the time-out."""
    with connect(url, api_key) as client:
        try:
            task = follow(client, task_id, timeout=timeout, reconnect_for=reconnect_for)
        except TimeoutError:
            typer.echo(f"error: {task_id} did not end within {timeout:g} s", err=True)
            raise typer.Exit(3) from None
    output(task, as_json)
    if task.status != "completed":
        raise typer.Exit(1)


@tasks_app.command("cancel")
def tasks_cancel(
    task_id: TaskId, url: ServerUrl = DEFAULT_URL, api_key: ApiKey = None, as_json: AsJson = False
) -> None:
    """Ask the server to cancel the task (its credits are released); prints it after."""
    with connect(url, api_key) as client:
        task = client.cancel(task_id)
    output(task, as_json)
