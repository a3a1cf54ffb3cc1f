"""Callback deliveries of a task, redelivery, and the account's signing secret."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from kreaserve import contract, self_service, task_queue
from kreaserve.api.deps import PrincipalDep, ServicesDep
from kreaserve.api.errors import APIError
from kreaserve.api.routes.tasks import check_task_id, not_found
from kreaserve.callbacks import outbox
from kreaserve.db.models import CallbackAttempt, CallbackDelivery
from kreaserve.states import DeliveryState

router = APIRouter()


def delivery_object(delivery: CallbackDelivery, attempts: list[CallbackAttempt]) -> dict[str, Any]:
    return {
        "object": "callback_delivery",
        "id": delivery.id,
        "url": delivery.url,
        "webhook_id": delivery.webhook_id,
        "status": delivery.status,
        "created": int(delivery.created_at),
        "next_attempt_at": (
            round(delivery.next_attempt_at, 3) if delivery.status == DeliveryState.PENDING else None
        ),
        "attempts": [
            {
                "number": a.number,
                "started_at": round(a.started_at, 3),
                "duration_ms": round(a.duration_seconds * 1000, 1),
                "status_code": a.status_code,
                "error": a.error,
            }
            for a in attempts
        ],
    }


@router.get("/v1/tasks/{task_id}/callbacks")
async def list_callbacks(
    task_id: str, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Every delivery of the task's callback and every attempt of each."""
    check_task_id(task_id)

    def read() -> dict[str, Any]:
        if task_queue.get(services.db, principal.account_id, task_id) is None:
            raise not_found(task_id)
        return {
            "object": "list",
            "data": [delivery_object(d, a) for d, a in outbox.deliveries(services.db, task_id)],
        }

    return await run_in_threadpool(read)


@router.post("/v1/tasks/{task_id}/callbacks/redeliver")
async def redeliver(task_id: str, services: ServicesDep, principal: PrincipalDep) -> JSONResponse:
    """Queue the task's callback again (same webhook-id, so receivers can drop duplicates)."""
    check_task_id(task_id)

    def queue_again() -> dict[str, Any]:
        task = task_queue.get(services.db, principal.account_id, task_id)
        if task is None:
            raise not_found(task_id)
        if not task.callback_url:
            raise APIError(409, "no_callback_url", "This task has no callback_url.", "task_id")
        if task.status not in contract.TERMINAL:
            raise APIError(
                409,
                "task_not_finished",
                "A callback is sent when the task ends; it has not ended yet.",
                "task_id",
            )
        try:
            outbox.redeliver(services.db, task, services.settings.callback_redeliveries_per_minute)
        except outbox.DeliveryPending:
            raise APIError(
                409,
                "callback_pending",
                "This task's callback is still being delivered; redeliver it "
                "once that delivery has succeeded or failed.",
                "task_id",
            ) from None
        except outbox.RedeliveryLimited as exc:
            raise APIError(
                429,
                "redelivery_rate_limited",
                f"This account may redeliver "
                f"{services.settings.callback_redeliveries_per_minute} callbacks "
                f"per minute; retry in {exc.retry_after} s.",
                headers={"Retry-After": str(exc.retry_after)},
            ) from None
        delivery, attempts = outbox.deliveries(services.db, task_id)[-1]
        return delivery_object(delivery, attempts)

    return JSONResponse(await run_in_threadpool(queue_again), status_code=202)


def secret_object(secret: str) -> dict[str, str]:
    return {"object": "webhook_secret", "secret": secret, "scheme": "standard-webhooks-v1"}


@router.get("/v1/callbacks/secret")
async def get_secret(services: ServicesDep, principal: PrincipalDep) -> dict[str, str]:
    """The account's secret that signs its callbacks (Standard Webhooks, `whsec_...`)."""

    return secret_object(
        await run_in_threadpool(self_service.webhook_secret, services.db, principal.account_id)
    )


@router.post("/v1/callbacks/secret/rotate")
async def rotate_secret(services: ServicesDep, principal: PrincipalDep) -> dict[str, str]:
    """A new signing secret; every callback sent from now on is signed with it."""

    secret = await run_in_threadpool(
        self_service.rotate_webhook_secret, services.db, principal.account_id
    )
    return secret_object(secret)
