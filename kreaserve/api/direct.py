"""A route documented by FastAPI like any other but served without its request handler,
for the busiest route (the poll).

FastAPI's handler solves the endpoint's parameters (path values through pydantic, the
`Request`), opens two exit stacks per request and wraps the endpoint's answer: about a
fifth of a poll's CPU once its read ran on the event loop. A `DirectRoute` endpoint takes
the `Request` and its path parameters as strings, checks them itself and returns its
`Response`; its errors reach the app's exception handlers as any route's do. Only for
routes of the app itself: FastAPI serves a route of an included router through a handler
it builds from the route's endpoint.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class DirectRoute(APIRoute):
    """An APIRoute (in the OpenAPI document, matched as before) whose endpoint is called
    as `endpoint(request=..., **path_params)`."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        call: Callable[..., Awaitable[Response]] = endpoint

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            response = await call(request=Request(scope, receive), **scope["path_params"])
            await response(scope, receive, send)

        self.app = app
