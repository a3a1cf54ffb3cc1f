"""One ASGI middleware for what an operator sees of each request: the request id (taken
from `X-Request-ID` or made, and echoed), the access log line and the HTTP metrics.

Plain ASGI rather than Starlette's BaseHTTPMiddleware: it is on every request's path, and
this costs one wrapper of `send` and a log call. It logs the route template, never the
path (which may be a signed result URL), the query, a header or a body.

Per request it avoids what it can: the metric children are looked up once per (method,
route, status) and kept (prometheus-client's `labels()` checks and joins its arguments on
every call), a made request id is `secrets.token_hex` rather than a `uuid.UUID` object, and
the log record is made directly, without `Logger.info`'s walk up the stack for the caller
(always this function), as a copy of one made once per thread (`LogRecord.__init__`
looks up the thread, the process and the file name each time: a third of the line's
CPU), unless a program installed a record factory of its own.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import threading
import time
from typing import Any

from kreaserve import metrics

log = logging.getLogger("kreaserve.access")

#: The metric children of each (method, route template, status) seen, up to a bound
#: (the method is the client's word).
_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
_MAX_CHILDREN = 1024


def _metrics_of(method: str, template: str, status: int) -> tuple[Any, Any]:
    key = (method, template, status)
    found = _children.get(key)
    if found is None:
        found = (
            metrics.HTTP_REQUESTS.labels(method, template, str(status)),
            metrics.HTTP_SECONDS.labels(method, template),
        )
        if len(_children) < _MAX_CHILDREN:
            _children[key] = found
    return found


#: An incoming X-Request-ID is kept only if it is short and plain (it is logged).
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
#: The access line (its arguments: method, route, status, ms, request id, account, task).
_LINE = "%s %s %d %.1f ms request_id=%s account=%s%s"
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
        request_id = request_id or secrets.token_hex(16)
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
            requests, durations = _metrics_of(method, template, status)
            requests.inc()
            durations.observe(seconds)
            if log.isEnabledFor(logging.INFO):
                _log_access(scope, method, template, status, seconds, request_id)


def _log_access(
    scope: dict, method: str, template: str, status: int, seconds: float, request_id: str
) -> None:
    state = scope["state"]
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
    args = (
        method,
        template,
        status,
        seconds * 1000,
        request_id,
        fields["account_id"] or "-",
        f" task={task_id}" if task_id else "",
    )
    if logging.getLogRecordFactory() is not logging.LogRecord:
        record = log.makeRecord(
            log.name, logging.INFO, __file__, 0, _LINE, args, None, "__call__", {"fields": fields}
        )
    else:
        record = _record(args, fields)
    log.handle(record)


#: (process, thread) -> the attributes of an access record made there, but its moment,
#: arguments and fields
_templates: dict[tuple[int, int], dict[str, Any]] = {}


def _record(args: tuple[Any, ...], fields: dict[str, Any]) -> logging.LogRecord:
    """An access record, as `Logger.makeRecord` would make it, from this thread's template."""
    where = (os.getpid(), threading.get_ident())
    template = _templates.get(where)
    if template is None:
        made = logging.LogRecord(log.name, logging.INFO, __file__, 0, _LINE, (), None, "__call__")
        template = _templates[where] = dict(made.__dict__)
    record = logging.LogRecord.__new__(logging.LogRecord)
    attributes = record.__dict__
    attributes.update(template)
    now = time.time()
    attributes["created"] = now
    attributes["msecs"] = int((now - int(now)) * 1000) + 0.0
    attributes["relativeCreated"] = template["relativeCreated"] + (now - template["created"]) * 1000
    attributes["args"] = args
    attributes["fields"] = fields
    return record
