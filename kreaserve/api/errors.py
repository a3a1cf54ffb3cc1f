"""The contract's one error shape, and handlers that put every failure into it."""

from __future__ import annotations

import logging

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


def error_response(exc: APIError) -> JSONResponse:
    return JSONResponse(
        error_body(exc.status, exc.code, exc.message, exc.param),
        status_code=exc.status,
        headers=exc.headers,
    )


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
    async def _api_error(_request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = exc.headers
        if exc.status_code == 404:
            message = f"No such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            headers = {**(headers or {}), "Allow": allowed_methods(request)}
        return JSONResponse(
            error_body(exc.status_code, code, message), status_code=exc.status_code, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
        param = loc[0] if loc else None
        return JSONResponse(
            error_body(
                400, "invalid_parameter", f"{param or 'request'}: {first.get('msg')}", param
            ),
            status_code=400,
        )

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, _exc: ClientDisconnect) -> JSONResponse:
        # Nobody reads this answer; it keeps a client that hung up out of the error log.
        log.info("client went away during %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body(400, "client_disconnected", "The client went away."), status_code=400
        )

    @app.exception_handler(sqlalchemy.exc.OperationalError)
    @app.exception_handler(sqlalchemy.exc.InterfaceError)
    async def _database_down(request: Request, exc: Exception) -> JSONResponse:
        log.error(
            "database unavailable on %s %s: %s",
            request.method,
            request.url.path,
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
        )
        return JSONResponse(
            error_body(
                503,
                "database_unavailable",
                "The service cannot reach its database right now; retry shortly.",
            ),
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body(500, "internal_error", "The server failed to handle this request."),
            status_code=500,
        )
