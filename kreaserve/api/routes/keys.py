"""/v1/keys: account holders list, create, rotate and revoke their own keys."""

from __future__ import annotations

import functools
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from kreaserve import self_service
from kreaserve.api.deps import PrincipalDep, ServicesDep, rate_limited, read_json_body
from kreaserve.api.errors import APIError
from kreaserve.presenters import key_object, new_key_object

router = APIRouter()

MAX_KEY_NAME = 100


def key_name(payload: Any) -> str:
    if not isinstance(payload, dict):
        raise APIError(400, "invalid_json", "The request body must be a JSON object.")
    name = payload.get("name")
    if not isinstance(name, str) or not name.strip():
        raise APIError(400, "invalid_name", "name must be a non-blank string", "name")
    if len(name) > MAX_KEY_NAME or "\x00" in name:
        raise APIError(
            400, "invalid_name", f"name must be at most {MAX_KEY_NAME} characters of text", "name"
        )
    return name.strip()


@router.get("/v1/keys")
async def list_keys(services: ServicesDep, principal: PrincipalDep) -> dict[str, Any]:
    keys = await run_in_threadpool(self_service.list_keys, services.db, principal.account_id)
    return {"object": "list", "data": [key_object(k, principal.key_id) for k in keys]}


@router.post("/v1/keys")
async def create_key(
    request: Request, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    """A new key of the caller's account; `key` is shown in this answer only. At most
    `max_keys_per_account` live keys, and `key_creates_per_minute` creations."""
    name = key_name(await read_json_body(request, services.settings.max_body_bytes))
    try:
        issued = await run_in_threadpool(
            functools.partial(
                self_service.create_key,
                services.db,
                principal.account_id,
                name,
                max_keys=services.settings.max_keys_per_account,
                creates_per_minute=services.settings.key_creates_per_minute,
            )
        )
    except self_service.TooManyKeys as exc:
        raise APIError(
            403,
            "too_many_keys",
            f"This account already has {exc.most} live keys, the most it may "
            "hold; revoke one (POST /v1/keys/{id}/revoke) first.",
        ) from None
    except self_service.CreationsLimited as exc:
        raise rate_limited(exc.refusal) from None
    return new_key_object(issued.new, issued.key)


#: The largest id of a 32-bit integer column.
ID_MAX = 2**31 - 1


def parse_key_id(key_id: str) -> int:
    if not (key_id.isascii() and key_id.isdigit()) or len(key_id) > 18:  # not "²", "١"
        raise APIError(400, "invalid_key_id", "Key ids are positive integers.", "key_id")
    if int(key_id) > ID_MAX:  # past the id column (PostgreSQL would refuse the query)
        raise APIError(404, "key_not_found", f"No key {key_id}.", "key_id")
    return int(key_id)


@router.post("/v1/keys/{key_id}/rotate")
async def rotate_key(key_id: str, services: ServicesDep, principal: PrincipalDep) -> dict[str, Any]:
    """Revoke the key and issue a new one with the same name, in one step."""
    number = parse_key_id(key_id)
    try:
        issued = await run_in_threadpool(
            functools.partial(
                self_service.rotate_key,
                services.db,
                principal.account_id,
                number,
                creates_per_minute=services.settings.key_creates_per_minute,
            )
        )
    except self_service.CreationsLimited as exc:
        raise rate_limited(exc.refusal) from None
    except self_service.KeyNotFound:
        raise APIError(
            404, "key_not_found", f"No live key {key_id} for this account.", "key_id"
        ) from None
    services.keys.forget_key(number)
    return new_key_object(issued.new, issued.key)


@router.post("/v1/keys/{key_id}/revoke")
async def revoke_key(key_id: str, services: ServicesDep, principal: PrincipalDep) -> dict[str, Any]:
    """Revoke a key; it stops working at once on this API process, and on the others
    within `auth_cache_seconds`."""
    number = parse_key_id(key_id)
    try:
        key = await run_in_threadpool(
            self_service.revoke_key, services.db, principal.account_id, number
        )
    except self_service.KeyNotFound:
        raise APIError(
            404, "key_not_found", f"No key {key_id} for this account.", "key_id"
        ) from None
    services.keys.forget_key(number)
    return key_object(key, principal.key_id)
