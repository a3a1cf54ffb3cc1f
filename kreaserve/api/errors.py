"""The contract's one error shape, and handlers that put every failure into it.

Under the OpenAI-compatible prefix (`/openai/`) the shape is OpenAI's: the same four keys,
with `param` always present (null when no field is at fault)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from kreaserve.contract import ERROR_TYPES

log = logging.getLogger("kreaserve.api")


class APIError(Exception):
    """A request error: HTTP status, machine code, human message and the field at fault."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param
        self.headers = headers


def _printable(text: str) -> str:
    """Text that can be sent as UTF-8: a lone surrogate echoed from the request (a field
    name, say) would otherwise make the error answer itself fail."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_body(status: int, code: str, message: str, param: str | None = None) -> dict:
    error: dict[str, object] = {
        "code": _printable(code),
        "message": _printable(message),
        "type": ERROR_TYPES.get(
            status, "invalid_request_error" if status < 500 else "internal_server_error"
        ),
    }
    if param is not None:
        error["param"] = _printable(param)
    return {"error": error}


#: The path prefix of the OpenAI-compatible endpoints (kreaserve/api/routes/openai.py).
OPENAI_PREFIX = "/openai/"


def respond(
    request: Request,
    status: int,
    code: str,
    message: str,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The error answer in the shape the request's API speaks."""
    body = error_body(status, code, message, param)
    if request.url.path.startswith(OPENAI_PREFIX):
        body["error"].setdefault("param", None)
    return JSONResponse(body, status_code=status, headers=headers)


def error_response(request: Request, exc: APIError) -> JSONResponse:
    return respond(request, exc.status, exc.code, exc.message, exc.param, exc.headers)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


def allowed_methods(request: Request) -> str:
    """Every method of every route at this path (Starlette names only the first route's,
    and this API has one route per method)."""
    from starlette.routing import Match

    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE and getattr(route, "methods", None):
            methods |= set(route.methods)
    return ", ".join(sorted(methods))


def install(app: FastAPI) -> None:
    """Register handlers so that no answer leaves without the error envelope."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = exc.headers
        if exc.status_code == 404:
            message = f"No such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            headers = {**(headers or {}), "Allow": allowed_methods(request)}
        return respond(request, exc.status_code, code, message, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
        param = loc[0] if loc else None
        message = f"{param or 'request'}: {first.get('msg')}"
        return respond(request, 400, "invalid_parameter", message, param)

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, _exc: ClientDisconnect) -> JSONResponse:
        # Nobody reads this answer; it keeps a client that hung up out of the error log.
        log.info("client went away during %s %s", request.method, request.url.path)
        return respond(request, 400, "client_disconnected", "The client went away.")

    @app.exception_handler(sqlalchemy.exc.OperationalError)
    @app.exception_handler(sqlalchemy.exc.InterfaceError)
    async def _database_down(request: Request, exc: Exception) -> JSONResponse:
        log.error(
            "database unavailable on %s %s: %s",
            request.method,
            request.url.path,
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
        )
        return respond(
            request,
            503,
            "database_unavailable",
            "The service cannot reach its database right now; retry shortly.",
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return respond(request, 500, "internal_error", "The server failed to handle this request.")
