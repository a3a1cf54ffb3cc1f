"""The OpenAI images API under /openai/v1, for the `openai` package and the tools built on
it: create the images as ordinary tasks (same key, billing and moderation), wait for them
(at most KREASERVE_OPENAI_WAIT_SECONDS) and answer OpenAI's shape. Errors are OpenAI's
shape too (kreaserve/api/errors.py). Answers that come after tasks were created carry
`x-should-retry: false`, so the `openai` package does not resend (and pay) them again.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import httpx
from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from kreaserve import accounts, contract, images, openai_compat, schemas, task_queue, tracing
from kreaserve.api import creating
from kreaserve.api.deps import PrincipalDep, Services, ServicesDep, in_create_thread, read_json_body
from kreaserve.api.errors import APIError
from kreaserve.db.models import Task

router = APIRouter(prefix="/openai/v1")
NO_RETRY = {"x-should-retry": "false"}
#: Seconds between reads of the tasks while waiting: from the first, growing to the last.
POLL_FIRST, POLL_LAST = 0.1, 1.0


@router.get("/models")
async def list_models(_principal: PrincipalDep) -> dict[str, Any]:
    """The models this server runs (OpenAI's list shape)."""
    return openai_compat.models_answer(int(time.time()))


@router.post("/images/generations")
async def generate_images(
    request: Request, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    """OpenAI's images.generate: `model`, `prompt`, `n` 1-4, `size` `WxH`, `quality`,
    `response_format` `url` or `b64_json`, `output_format` `png`, `jpeg` or `webp` with
    `output_compression`; waits for the images."""
    payload = await read_json_body(request, services.settings.max_body_bytes)
    if not isinstance(payload, dict):
        raise APIError(400, "invalid_json", "The request body must be a JSON object.")
    try:
        body = openai_compat.ImagesRequest.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = str(first["loc"][0]) if first["loc"] else None
        raise APIError(400, f"invalid_{param}", f"{param}: {first['msg']}", param) from None
    try:
        ratio, tier = openai_compat.map_size(body.size, body.quality)
    except openai_compat.SizeError as exc:
        raise APIError(400, "invalid_size", str(exc), "size") from None
    contract_body = {
        "model": body.model,
        "size": ratio,
        "quality": tier,
        "output_format": body.output_format,
    }
    if body.output_compression is not None:  # OpenAI's 0-100; the contract's quality is 1-100
        contract_body["output_quality"] = max(1, body.output_compression)
    if body.prompt is not None:  # else the contract's "prompt is required"
        contract_body["prompt"] = body.prompt
    try:
        parsed = await run_in_threadpool(schemas.parse_create_request, contract_body)
    except schemas.RequestError as exc:
        raise APIError(400, exc.code, exc.message, exc.param) from None
    params = task_queue.NewTask(
        prompt=parsed.prompt,
        size=ratio,
        quality=tier,
        seed=None,
        nsfw_check=False,
        callback_url=None,
        model=parsed.model,
        traceparent=tracing.incoming(request.headers.get("traceparent")),
        output_format=parsed.output_format or images.DEFAULT_FORMAT,
        output_quality=parsed.output_quality or images.DEFAULT_QUALITY,
    )
    tasks = await in_create_thread(
        services, lambda: create_tasks(services, principal, params, body.n)
    )
    ids = [task.id for task in tasks]
    request.state.task_id = ids[0]  # for the access log
    ended = await wait_for(request, services, principal.account_id, ids)
    if ended is None:
        raise APIError(
            504,
            "generation_timeout",
            f"The images were not ready within {services.settings.openai_wait_seconds:g} s. "
            f"Their tasks go on and are charged when they complete: {', '.join(ids)} "
            "(GET /v1/tasks/{id}).",
            headers=NO_RETRY,
        )
    data = await run_in_threadpool(images_of, services, ended, body.response_format)
    return {"created": tasks[0].created, "data": data, "output_format": params.output_format}


def create_tasks(
    services: Services, principal: accounts.Principal, params: task_queue.NewTask, n: int
) -> list[Task]:
    """Moderate once, then create `n` tasks (n charges); if one is refused, the ones made
    before it are cancelled (their credits released) and the refusal raised."""
    creating.moderate(services, params)
    price = creating.price_of(services, principal, params)
    tasks: list[Task] = []
    try:
        for _ in range(n):
            tasks.append(creating.enqueue(services, principal, params, price))
    except APIError:
        for task in tasks:
            task_queue.cancel(services.db, principal.account_id, task.id)
        raise
    return tasks


def read_tasks(services: Services, account_id: int, ids: list[str]) -> list[Task]:
    """The tasks in the order of `ids` (as GET /v1/tasks/{id} reads them, all in one read)."""
    found = task_queue.get_many(services.db, account_id, ids)
    return [found[task_id] for task_id in ids]


async def wait_for(
    request: Request, services: Services, account_id: int, ids: list[str]
) -> list[Task] | None:
    """The tasks once all have ended, or None after the configured wait (or once the
    client has gone: nobody reads the answer). One read of all of them per poll."""
    deadline = time.monotonic() + services.settings.openai_wait_seconds
    delay = POLL_FIRST
    while True:
        tasks = await run_in_threadpool(read_tasks, services, account_id, ids)
        if all(task.status in contract.TERMINAL for task in tasks):
            return tasks
        left = deadline - time.monotonic()
        if left <= 0 or await request.is_disconnected():
            return None
        await asyncio.sleep(min(delay, left))
        delay = min(POLL_LAST, delay * 1.5)


def images_of(services: Services, tasks: list[Task], response_format: str) -> list[dict]:
    """OpenAI's `data`, or the error of the first task that did not complete."""
    for task in tasks:
        if task.status == contract.COMPLETED:
            continue
        ids = ", ".join(task.id for task in tasks)
        if task.error_code == "content_policy_violation":
            message = f"An image was refused by the content policy (tasks {ids})."
            raise APIError(400, "content_policy_violation", message, headers=NO_RETRY)
        raise APIError(
            500,
            task.error_code or "generation_failed",
            f"Task {task.id} {task.status}: {task.error_message or ''} (tasks {ids}; the "
            "completed ones are charged, see GET /v1/tasks/{id}).",
            headers=NO_RETRY,
        )
    data: list[dict] = []
    for task in tasks:
        keys = list(task.result_keys or [])
        if response_format == "url":
            urls = services.links.urls(keys, task.results_expire_at or 0)
            data += [{"url": url} for url in urls]
        else:
            data += [
                {"b64_json": base64.b64encode(image_bytes(services, k)).decode()} for k in keys
            ]
    return data


def image_bytes(services: Services, key: str) -> bytes:
    """A stored result: the local file, or the object through a short presigned link."""
    path = services.storage.path(key)
    if path is not None:
        return path.read_bytes()
    link = services.storage.presigned_url(key, int(time.time()) + 300)
    if link is None:
        raise APIError(500, "result_unavailable", f"The result {key} cannot be read.")
    response = httpx.get(link, timeout=30)
    response.raise_for_status()
    return response.content
