"""The uvicorn server `kreaserve serve` runs, with bounds on slow clients.

uvicorn bounds idle keep-alive connections (`timeout_keep_alive`) and, with
`limit_concurrency`, answers 503 past a number of connections, but it has no limit on how
long a client may take to send its request: a connection that sends one header line or one
body byte per second stays open for ever (a slowloris). `GuardedH11Protocol` adds the two
deadlines other servers have (nginx's `client_header_timeout` / `client_body_timeout`,
gunicorn's and Apache's `RequestReadTimeout`): the request head must arrive within
`header_timeout` of its first byte (or of the connection), and the whole body within
`body_timeout` of the head. A connection past either is closed. It is written here, as a
subclass of uvicorn's own h11 protocol, because neither uvicorn nor h11 offers it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from kreaserve.config import Settings

log = logging.getLogger("kreaserve.http")


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on the request head and one on the body."""

    header_timeout = 10.0
    body_timeout = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._waiting_for: object = None  # the h11 client state the deadline is about

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(h11.IDLE, self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        state = self.conn.their_state
        if state is h11.IDLE and data:
            self._arm(h11.IDLE, self.header_timeout)  # a head has begun; keep its deadline
        elif state is h11.SEND_BODY:
            self._arm(h11.SEND_BODY, self.body_timeout)
        else:
            self._disarm()

    def on_response_complete(self) -> None:
        self._disarm()  # the keep-alive timeout takes over until the next request begins
        super().on_response_complete()

    def _arm(self, state: object, seconds: float) -> None:
        if self._deadline is not None and self._waiting_for is state:
            return  # a deadline runs from the start of the head or body, not the last byte
        self._disarm()
        self._waiting_for = state
        self._deadline = self.loop.call_later(seconds, self._expired, state)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._waiting_for = None, None

    def _expired(self, state: object) -> None:
        self._deadline, self._waiting_for = None, None
        if self.transport.is_closing() or self.conn.their_state is not state:
            return
        if state is h11.IDLE and self.cycle is not None and not self.cycle.response_complete:
            return  # a response is still being sent; the client is not the slow one
        part = "headers" if state is h11.IDLE else "body"
        log.info(
            "closing a connection from %s: request %s not received in time",
            f"{self.client[0]}:{self.client[1]}" if self.client else "?",
            part,
        )
        self.transport.close()


def guarded_protocol(settings: Settings) -> type[GuardedH11Protocol]:
    """The protocol class with this server's deadlines."""
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {
            "header_timeout": settings.header_timeout_seconds,
            "body_timeout": settings.body_timeout_seconds,
        },
    )


def make_server(app: Any, settings: Settings) -> uvicorn.Server:
    """A uvicorn server for `app` on the configured address, bounded against slow clients."""
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            http=guarded_protocol(settings),
            # uvicorn annotates this int; it is used as seconds for call_later, float works.
            timeout_keep_alive=settings.keep_alive_seconds,  # type: ignore[arg-type]
            limit_concurrency=settings.max_connections,
        )
    )
