"""/admin/v1: operators manage accounts, keys and credits with the admin token.

Without KREASERVE_ADMIN_TOKEN the admin API does not exist (404), so a default
install exposes nothing; a wrong token is a 401 like any bad key.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from kreaserve import admin_service, ledger, schemas
from kreaserve.api.deps import ServicesDep, read_json_body
from kreaserve.api.errors import APIError
from kreaserve.api.routes.keys import ID_MAX, key_object, new_key_object, parse_key_id


async def require_admin(request: Request, services: ServicesDep) -> None:
    token = services.settings.admin_token
    if not token:
        raise APIError(404, "not_found", f"No such endpoint: {request.method} {request.url.path}")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        raise APIError(401, "invalid_admin_token", "The admin token is missing or wrong.")


router = APIRouter(prefix="/admin/v1", dependencies=[Depends(require_admin)])


async def body_of(request: Request, services: ServicesDep, model: type[schemas.M]) -> schemas.M:
    payload = await read_json_body(request, services.settings.max_body_bytes)
    try:
        return schemas.parse_body(model, payload)
    except schemas.RequestError as exc:
        raise APIError(400, exc.code, exc.message, exc.param) from None


async def parse_account_id(account_id: str) -> int:
    if not (account_id.isascii() and account_id.isdigit()) or len(account_id) > 18:
        raise APIError(
            400, "invalid_account_id", "Account ids are positive integers.", "account_id"
        )
    if int(account_id) > ID_MAX:  # past the id column (PostgreSQL would refuse the query)
        raise APIError(404, "account_not_found", f"No account {account_id}.", "account_id")
    return int(account_id)


def not_found(exc: admin_service.AccountNotFound) -> APIError:
    return APIError(404, "account_not_found", str(exc), "account_id")


def summary(services: ServicesDep, account_id: int) -> dict[str, Any]:
    try:
        return admin_service.account(services.db, account_id)
    except admin_service.AccountNotFound as exc:
        raise not_found(exc) from None


AccountId = Annotated[int, Depends(parse_account_id)]


@router.get("/accounts")
async def list_accounts(services: ServicesDep) -> dict[str, Any]:
    return {
        "object": "list",
        "data": await run_in_threadpool(admin_service.list_accounts, services.db),
    }


@router.post("/accounts")
async def create_account(request: Request, services: ServicesDep) -> dict[str, Any]:
    body = await body_of(request, services, schemas.AccountCreate)
    return await run_in_threadpool(
        admin_service.create_account,
        services.db,
        body.name,
        ledger.to_units(body.credits),
        admin_service.limit_fields(body),
    )


@router.get("/accounts/{account_id}")
async def get_account(account_id: AccountId, services: ServicesDep) -> dict[str, Any]:
    return await run_in_threadpool(summary, services, account_id)


@router.patch("/accounts/{account_id}")
async def update_account(
    account_id: AccountId, request: Request, services: ServicesDep
) -> dict[str, Any]:
    body = await body_of(request, services, schemas.AccountLimits)
    try:
        found = await run_in_threadpool(
            admin_service.update_account, services.db, account_id, admin_service.limit_fields(body)
        )
    except admin_service.AccountNotFound as exc:
        raise not_found(exc) from None
    services.keys.forget_account(account_id)  # new limits or group apply here at once
    return found


@router.post("/accounts/{account_id}/credits")
async def change_credits(
    account_id: AccountId, request: Request, services: ServicesDep
) -> dict[str, Any]:
    """`grant` adds credits; `adjust` corrects either way (never below what is reserved)."""
    body = await body_of(request, services, schemas.CreditsChange)
    try:
        return await run_in_threadpool(
            admin_service.change_credits,
            services.db,
            account_id,
            ledger.to_units(body.amount),
            body.kind,
            body.note or body.kind,
        )
    except admin_service.GrantNotPositive:
        raise APIError(
            400, "invalid_amount", "a grant must be positive; use kind adjust", "amount"
        ) from None
    except admin_service.AccountNotFound as exc:
        raise not_found(exc) from None
    except admin_service.CreditsRefused as exc:  # the account's state, not the request
        raise APIError(409, "invalid_amount", str(exc), "amount") from None


@router.get("/accounts/{account_id}/keys")
async def list_account_keys(account_id: AccountId, services: ServicesDep) -> dict[str, Any]:
    try:
        keys = await run_in_threadpool(admin_service.account_keys, services.db, account_id)
    except admin_service.AccountNotFound as exc:
        raise not_found(exc) from None
    return {"object": "list", "data": [key_object(k) for k in keys]}


@router.post("/accounts/{account_id}/keys")
async def create_account_key(
    account_id: AccountId, request: Request, services: ServicesDep
) -> dict[str, Any]:
    body = await body_of(request, services, schemas.KeyCreate)
    try:
        issued = await run_in_threadpool(
            admin_service.issue_key, services.db, account_id, body.name
        )
    except admin_service.AccountNotFound as exc:
        raise not_found(exc) from None
    return new_key_object(issued.new, issued.key)


@router.post("/keys/{key_id}/revoke")
async def revoke_any_key(key_id: str, services: ServicesDep) -> JSONResponse:
    number = parse_key_id(key_id)
    try:
        key = await run_in_threadpool(admin_service.revoke_key, services.db, number)
    except admin_service.KeyNotFound:
        raise APIError(404, "key_not_found", f"No key {key_id}.", "key_id") from None
    services.keys.forget_key(number)
    return JSONResponse(key_object(key))
