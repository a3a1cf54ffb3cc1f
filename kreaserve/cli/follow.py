"""Following one task to its end, for `generate` and `tasks wait`: the one place that
decides how updates arrive, and that rides out a server restart."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

import typer

#: Waits between tries while the server cannot be reached: doubling, at most this long.
FIRST_RETRY_SECONDS, MAX_RETRY_SECONDS = 0.5, 5.0

#: The commands' --reconnect-for option (follow's `reconnect_for`).
ReconnectFor = Annotated[
    float,
    typer.Option(min=0, help="Keep following the task this long while the server is away."),
]


def follow(
    client: Any,
    task_id: str,
    *,
    on_update: Callable[[Any], None] | None = None,
    timeout: float = 3600.0,
    reconnect_for: float = 120.0,
    sleep: Callable[[float], object] = time.sleep,
) -> Any:
    """The task once it has ended (the SDK's Task); `on_update` sees every change.

    A dropped connection or a 502/503/504 (a server restarting, a proxy without a backend)
    does not end the wait: the same task id is asked again with a doubling backoff, for
    up to `reconnect_for` seconds in a row without an answer; then the last error is
    raised. Nothing is created again: the task goes on on the server meanwhile."""
    import httpx

    from kreaserve.client import KreaserveError

    deadline = time.monotonic() + timeout
    unreachable_since: float | None = None
    delay = FIRST_RETRY_SECONDS

    def seen(task: Any) -> None:
        nonlocal unreachable_since, delay
        if unreachable_since is not None:
            typer.echo(f"reconnected; following {task_id} again", err=True)
        unreachable_since, delay = None, FIRST_RETRY_SECONDS
        if on_update:
            on_update(task)

    while True:
        try:
            return client.wait(
                task_id,
                timeout=max(0.0, deadline - time.monotonic()),
                poll_interval=0.25,
                on_update=seen,
            )
        except (httpx.TransportError, KreaserveError) as exc:
            if isinstance(exc, KreaserveError) and exc.status not in (502, 503, 504):
                raise
            now = time.monotonic()
            if unreachable_since is None:
                unreachable_since = now
                typer.echo(
                    f"lost the server ({type(exc).__name__}); still following {task_id} "
                    f"for up to {reconnect_for:g} s",
                    err=True,
                )
            if now - unreachable_since >= reconnect_for or now >= deadline:
                raise
            sleep(min(delay, reconnect_for - (now - unreachable_since), deadline - now))
            delay = min(delay * 2, MAX_RETRY_SECONDS)
