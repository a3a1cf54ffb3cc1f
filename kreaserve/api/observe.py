"""One ASGI middleware for what an operator sees of each request: the request id (taken
from `X-Request-ID` or made, and echoed), the access log line and the HTTP metrics.

Plain ASGI rather than Starlette's BaseHTTPMiddleware: it is on every request's path, and
this costs one wrapper of `send` and a log call. It logs the route template, never the
path (which may be a signed result URL), the query, a header or a body.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from kreaserve import metrics

log = logging.getLogger("kreaserve.access")

#: An incoming X-Request-ID is kept only if it is short and plain (it is logged).
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
#: A task id from the path is logged only if it looks like one (it is user input).
_TASK_ID = re.compile(r"[A-Za-z0-9_\-]{1,80}")


class ObserveMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                request_id = candidate if _REQUEST_ID.fullmatch(candidate) else None
                break
        request_id = request_id or uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - began
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            metrics.HTTP_REQUESTS.labels(method, template, str(status)).inc()
            metrics.HTTP_SECONDS.labels(method, template).observe(seconds)
            fields = {
                "request_id": request_id,
                "method": method,
                "route": template,
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
                "account_id": state.get("account_id"),
            }
            task_id = (scope.get("path_params") or {}).get("task_id") or state.get("task_id")
            if task_id and not _TASK_ID.fullmatch(task_id):
                task_id = None
            if task_id:
                fields["task_id"] = task_id
            log.info(
                "%s %s %d %.1f ms request_id=%s account=%s%s",
                method,
                template,
                status,
                seconds * 1000,
                request_id,
                fields["account_id"] or "-",
                f" task={task_id}" if task_id else "",
                extra={"fields": fields},
            )
