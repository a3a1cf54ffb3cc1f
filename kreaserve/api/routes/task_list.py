"""GET /v1/tasks: the caller's own tasks, newest first, a page at a time."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from kreaserve import task_list
from kreaserve.api.deps import PrincipalDep, ServicesDep
from kreaserve.api.errors import APIError
from kreaserve.api.presenters import task_answer

router = APIRouter()


def _limit(raw: str | None) -> int:
    if raw is None:
        return task_list.DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= task_list.MAX_LIMIT:
        raise APIError(
            400,
            "invalid_limit",
            f"limit must be an integer from 1 to {task_list.MAX_LIMIT}.",
            "limit",
        )
    return int(raw)


def _status(raw: str | None) -> str | None:
    if raw is not None and raw not in task_list.STATUSES:
        raise APIError(
            400,
            "invalid_status",
            f"status must be one of {', '.join(task_list.STATUSES)}.",
            "status",
        )
    return raw


def _position(raw: str | None) -> task_list.Position | None:
    if raw is None:
        return None
    try:
        return task_list.Position.decode(raw)
    except task_list.BadCursor:
        raise APIError(
            400,
            "invalid_cursor",
            "cursor must be a next_cursor value returned by this endpoint.",
            "cursor",
        ) from None


#: The query as the route checks it, and the answer, for the OpenAPI document (the route
#: reads the query itself, so that a bad value is a 400 naming it, not a 422).
OPENAPI = {
    "parameters": [
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": task_list.MAX_LIMIT,
                "default": task_list.DEFAULT_LIMIT,
            },
        },
        {
            "name": "status",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": list(task_list.STATUSES)},
        },
        {
            "name": "cursor",
            "in": "query",
            "required": False,
            "description": "The `next_cursor` of the previous page (opaque).",
            "schema": {"type": "string"},
        },
    ],
    "responses": {
        "200": {
            "description": "A page of the caller's tasks, newest first.",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["object", "data", "has_more", "next_cursor"],
                        "properties": {
                            "object": {"type": "string", "enum": ["list"]},
                            "data": {
                                "type": "array",
                                "items": {"$ref": "#/components/schemas/Task"},
                            },
                            "has_more": {"type": "boolean"},
                            "next_cursor": {"type": ["string", "null"]},
                        },
                    }
                }
            },
        }
    },
}


@router.get("/v1/tasks", openapi_extra=OPENAPI)
async def list_tasks(
    request: Request, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    """`limit` (1-100, default 20), `status`, `cursor` (the previous page's next_cursor).
    Tasks carry no estimated_time here: a page of estimates would cost a query each."""
    params = request.query_params
    limit = _limit(params.get("limit"))
    status = _status(params.get("status"))
    after = _position(params.get("cursor"))

    def load() -> dict[str, Any]:
        page = task_list.list_tasks(
            services.db, principal.account_id, limit=limit, status=status, after=after
        )
        next_cursor = page.next_position.encode() if page.next_position else None
        return {
            "object": "list",
            "data": [task_answer(services, task, with_estimate=False) for task in page.tasks],
            "has_more": next_cursor is not None,
            "next_cursor": next_cursor,
        }

    return await run_in_threadpool(load)
