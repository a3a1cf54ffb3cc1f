"""GET /v1/tasks/{id} and POST /v1/tasks/{id}/cancel."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from kreaserve import contract, task_queue
from kreaserve.api.deps import PrincipalDep, ServicesDep, get_principal, in_thread, services_of
from kreaserve.api.errors import APIError
from kreaserve.api.presenters import task_answer
from kreaserve.db.models import Task
from kreaserve.presenters import render_json

router = APIRouter()


def check_task_id(task_id: str) -> None:
    """400 for ids that cannot be ours; well-formed unknown ids get 404 later."""
    if not task_id.startswith(contract.TASK_ID_PREFIX):
        raise APIError(
            400, "invalid_task_id", f"Task ids start with '{contract.TASK_ID_PREFIX}'.", "task_id"
        )
    if len(task_id) > 64 or not (task_id.isascii() and task_id.isprintable()):
        # No id of ours is longer or holds such characters (PostgreSQL refuses NUL).
        raise APIError(400, "invalid_task_id", "This is not a task id.", "task_id")


def not_found(task_id: str) -> APIError:
    return APIError(404, "task_not_found", f"No task {task_id} for this account.", "task_id")


async def get_task(task_id: str, request: Request) -> Response:
    """GET /v1/tasks/{id}, a route of the app itself (kreaserve.api.app).

    The busiest route (clients poll it): no dependency for FastAPI to solve (the
    caller is authenticated by a direct call) and the answer rendered once, by the
    renderer callbacks use, rather than through FastAPI's `jsonable_encoder`."""
    # The task is read on the event loop (kreaserve.db.task_read: a SQLite file,
    # PostgreSQL) and, unless it needs the queue snapshot read again or links to its
    # images (a store may be asked for them), answered there too: a thread hop cost a
    # poll more CPU than the rest of its work.
    services = services_of(request)
    principal = await get_principal(request)
    check_task_id(task_id)
    found = await services.task_read.get(principal.account_id, task_id)
    if found is None:
        raise not_found(task_id)
    if isinstance(found, Task):
        task = found
        snapshot = services.estimates.fresh()
        if task.status != contract.COMPLETED and (snapshot or task.status in contract.TERMINAL):
            body = render_json(task_answer(services, task, snapshot=snapshot))
            return Response(body, media_type="application/json")

        def answer() -> bytes:
            return render_json(task_answer(services, task))

        return Response(await in_thread(services, answer), media_type="application/json")

    def load() -> bytes:
        task = task_queue.get(services.db, principal.account_id, task_id)
        if task is None:
            raise not_found(task_id)
        return render_json(task_answer(services, task))

    return Response(await in_thread(services, load), media_type="application/json")


@router.post("/v1/tasks/{task_id}/cancel")
async def cancel_task(
    task_id: str, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Pending: cancelled at once. Processing: stopped before its next denoising step
    (the answer then still says processing, with can_cancel false). Ended: 400."""
    check_task_id(task_id)

    def cancel() -> dict[str, Any]:
        task = task_queue.cancel(services.db, principal.account_id, task_id)
        if task is None:
            raise not_found(task_id)
        if task.status in (contract.COMPLETED, contract.FAILED):
            raise APIError(
                400,
                "task_not_cancellable",
                f"Task {task_id} has already ended ({task.status}).",
                "task_id",
            )
        return task_answer(services, task)

    return await run_in_threadpool(cancel)
