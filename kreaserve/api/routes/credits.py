"""GET /v1/credits: the account's balance, without spending anything."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from kreaserve import ledger
from kreaserve.api.deps import PrincipalDep, ServicesDep

router = APIRouter()


@router.get("/v1/credits")
async def get_credits(services: ServicesDep, principal: PrincipalDep) -> dict[str, Any]:
    """`balance`: held by the account; `reserved`: held for unfinished tasks;
    `available`: what new tasks may spend (balance - reserved)."""

    def read() -> ledger.Balance:
        with services.db.transaction() as session:
            return ledger.balance(session, principal.account_id)

    standing = await run_in_threadpool(read)
    return {
        "object": "credit_balance",
        "balance": ledger.to_credits(standing.balance_units),
        "reserved": ledger.to_credits(standing.reserved_units),
        "available": ledger.to_credits(standing.available_units),
        "user_group": principal.user_group,
    }
