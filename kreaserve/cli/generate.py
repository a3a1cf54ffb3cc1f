"""`kreaserve generate`: one image through a running server (the SDK), with a progress bar,
saved as PNG, JPEG or WebP after the output file's name; it rides out a server restart."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kreaserve.cli.common import (
    DEFAULT_URL,
    ApiKey,
    AsJson,
    ServerUrl,
    app,
    connect,
    fail,
    print_json,
    reason,
)
from kreaserve.cli.follow import ReconnectFor, follow

#: The output file's extension -> the `output_format` asked of the server.
FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="What to draw.")],
    size: Annotated[str, typer.Option(help="Aspect ratio, e.g. 16:9.")] = "1:1",
    quality: Annotated[str, typer.Option(help="1K or 2K.")] = "1K",
    seed: Annotated[int | None, typer.Option(help="0..1048576; random when absent.")] = None,
    output: Annotated[
        Path,
        typer.Option("-o", "--output", help="Where to save the image: .png, .jpg/.jpeg or .webp."),
    ] = Path("image.png"),
    output_quality: Annotated[
        int | None,
        typer.Option(min=1, max=100, help="JPEG/WebP quality, 1-100 (the server's default: 90)."),
    ] = None,
    reconnect_for: ReconnectFor = 120,
    url: ServerUrl = DEFAULT_URL,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Generate one image through a running server, with a progress bar, and save it."""
    import httpx

    from kreaserve.client import KreaserveError

    fmt = check_output(output)
    options: dict[str, Any] = {"output_format": fmt}
    if output_quality is not None:
        options["output_quality"] = output_quality
    with connect(url, api_key) as client:
        task = client.create(prompt, size=size, quality=quality, seed=seed, **options)
        task_id = task.id
        try:
            task = with_progress(client, task, reconnect_for, to_stderr=as_json)
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
        except (httpx.HTTPError, KreaserveError, OSError, TimeoutError) as exc:
            raise fail(
                f"lost task {task_id}: {reason(exc)}. It may still finish: query it with "
                f"`kreaserve tasks get {task_id}` (GET {url}/v1/tasks/{task_id})"
            ) from None
    if as_json:
        print_json({**task.model_dump(mode="json"), "output": str(output)})
        return
    typer.echo(f"saved {output} (task {task_id}, seed {task.seed})")


def check_output(output: Path) -> str:
    """The output format the file name asks for; refuses, before any task is created (and
    charged), a name it cannot save: an unknown extension, a folder, an unwritable place.
    A missing folder is created."""
    fmt = FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise fail(
            f"-o {output}: the file name must end in .png, .jpg, .jpeg or .webp "
            "(the image's format)"
        )
    if output.is_dir():
        raise fail(f"-o {output} is a folder; give a file name such as {output / 'image.png'}")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(
            f"-o {output}: cannot create the folder {output.parent}: {exc.strerror or exc}"
        ) from None
    import os

    if not os.access(output.parent, os.W_OK):
        raise fail(f"-o {output}: the folder {output.parent} is not writable")
    return fmt


def describe(task: Any) -> str:
    """The progress bar's words: the phase from the events stream (`denoising 3/8`), the
    place in the queue, or (from a server without events) the status."""
    if task.status == "processing" and task.phase:
        return task.phase
    if task.status == "pending" and task.position:
        return "queued, next" if task.position == 1 else f"queued, {task.position} in line"
    return str(task.status)


def with_progress(client: Any, task: Any, reconnect_for: float, *, to_stderr: bool) -> Any:
    """Follow the task to its end, drawing a progress bar (on stderr under --json)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    console = Console(stderr=to_stderr)
    with Progress(*columns, console=console, transient=False) as bar:
        line = bar.add_task(task.status, total=100)

        def update(current: Any) -> None:
            bar.update(line, completed=current.progress, description=describe(current))

        return follow(client, task.id, on_update=update, reconnect_for=reconnect_for)
