"""POST /v1/images/generations: validate, price, reserve and enqueue a task."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from starlette.concurrency import run_in_threadpool

from kreaserve import idempotency, ledger, schemas, task_queue, tracing
from kreaserve.api.deps import PrincipalDep, ServicesDep, rate_limited, read_json_body
from kreaserve.api.errors import APIError
from kreaserve.api.presenters import task_answer
from kreaserve.moderation import ModerationUnavailable

router = APIRouter()
log = logging.getLogger("kreaserve.api")
#: Prompts up to this many characters are validated on the event loop.
INLINE_PROMPT_CHARS = 2000


@router.post("/v1/images/generations")
async def create_generation(
    request: Request,
    response: Response,
    services: ServicesDep,
    principal: PrincipalDep,
    idempotency_key: Annotated[
        str | None, Header(alias=idempotency.HEADER, json_schema_extra=idempotency.HEADER_SCHEMA)
    ] = None,
) -> dict[str, Any]:
    """Create a task. The same `Idempotency-Key` (1 to 255 characters, per account) with
    the same body within 24 hours answers the task the first request created, charged
    once; with another body it is a 409 `idempotency_key_reused`."""
    try:
        key_value = idempotency.check_header(idempotency_key)
    except ValueError as exc:
        raise APIError(400, "invalid_idempotency_key", str(exc), idempotency.HEADER) from None
    payload = await read_json_body(request, services.settings.max_body_bytes)
    allow = services.settings.callback_allow_host_set
    try:
        # A usual prompt is validated and counted in microseconds, less than a thread hop
        # costs; a long one (BPE over thousands of characters) leaves the loop.
        prompt = payload.get("prompt") if isinstance(payload, dict) else None
        if isinstance(prompt, str) and len(prompt) > INLINE_PROMPT_CHARS:
            body = await run_in_threadpool(schemas.parse_create_request, payload, allow)
        else:
            body = schemas.parse_create_request(payload, allow)
    except schemas.RequestError as exc:
        raise APIError(400, exc.code, exc.message, exc.param) from None
    params = task_queue.NewTask(
        prompt=body.prompt,
        size=body.size or "1:1",
        quality=body.quality or "1K",
        seed=body.seed or None,
        nsfw_check=bool(body.nsfw_check),
        callback_url=body.callback_url,
        model=body.model,
        traceparent=tracing.incoming(request.headers.get("traceparent")),
    )
    key = None
    if key_value is not None:
        key = idempotency.Key(key_value, idempotency.body_hash(body.model_dump(mode="json")))
    price = ledger.to_units(
        services.settings.price(params.model, principal.user_group, params.quality)
    )

    def moderate_and_create() -> dict[str, Any]:
        """One thread for the classifier and the transaction (each hop costs)."""
        try:
            decision = services.moderator.check(params.prompt, strict=params.nsfw_check)
        except ModerationUnavailable:
            log.exception("prompt moderation is unavailable; refusing the task")
            raise APIError(
                503,
                "moderation_unavailable",
                "Content moderation is unavailable, so no task can be accepted; retry shortly.",
                headers={"Retry-After": "30"},
            ) from None
        if not decision.allowed:
            raise APIError(400, "content_policy_violation", decision.message, "prompt")
        try:
            task = task_queue.create(
                services.db,
                principal.account_id,
                principal.key_id,
                principal.user_group,
                params,
                price,
                services.settings.max_tasks_in_flight,
                key,
            )
        except idempotency.Replayed as replay:
            response.headers["Idempotent-Replayed"] = "true"
            return task_answer(services, replay.task)
        except idempotency.KeyReused:
            raise APIError(
                409,
                "idempotency_key_reused",
                f"This {idempotency.HEADER} was used in the last 24 hours for a request with a "
                "different body; use a new key for a new request.",
                idempotency.HEADER,
            ) from None
        except task_queue.LimitReached as exc:
            raise rate_limited(exc.refusal) from None
        except task_queue.DailyCapReached as exc:
            raise APIError(
                402,
                "daily_spend_cap_reached",
                f"This task would pass the account's daily spend cap of "
                f"{ledger.to_credits(exc.cap_units)} credits (UTC day).",
            ) from None
        except task_queue.InsufficientCredits:
            raise APIError(
                402,
                "insufficient_credits",
                f"This task costs {ledger.to_credits(price)} credits, more than the account's "
                "available balance (see GET /v1/credits).",
            ) from None
        answer = task_answer(services, task)
        services.estimates.note_created(task)
        return answer

    created = await run_in_threadpool(moderate_and_create)
    request.state.task_id = created["id"]  # for the access log
    return created
