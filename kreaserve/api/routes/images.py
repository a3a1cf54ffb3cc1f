"""POST /v1/images/generations: validate, price, reserve and enqueue a task."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from starlette.concurrency import run_in_threadpool

from kreaserve import idempotency, images, schemas, task_queue, tracing
from kreaserve.api import creating
from kreaserve.api.deps import PrincipalDep, ServicesDep, in_create_thread, read_json_body
from kreaserve.api.errors import APIError
from kreaserve.api.presenters import task_answer

router = APIRouter()
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
        output_format=body.output_format or images.DEFAULT_FORMAT,
        output_quality=body.output_quality or images.DEFAULT_QUALITY,
    )
    key = None
    if key_value is not None:
        key = idempotency.Key(key_value, idempotency.body_hash(body.model_dump(mode="json")))
    price = creating.price_of(services, principal, params)

    def moderate_and_create() -> dict[str, Any]:
        """One create thread for the classifier and the transaction (each hop costs)."""
        creating.moderate(services, params)
        try:
            task = creating.enqueue(services, principal, params, price, key)
        except idempotency.Replayed as replay:
            response.headers["Idempotent-Replayed"] = "true"
            return task_answer(services, replay.task)
        return task_answer(services, task)

    created = await in_create_thread(services, moderate_and_create)
    request.state.task_id = created["id"]  # for the access log
    return created
