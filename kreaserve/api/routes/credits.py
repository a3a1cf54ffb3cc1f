"""GET /v1/credits (the account's balance, without spending anything) and GET /v1/usage."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from kreaserve import ledger, usage
from kreaserve.api.deps import PrincipalDep, ServicesDep
from kreaserve.api.errors import APIError

router = APIRouter()


@router.get("/v1/credits")
async def get_credits(services: ServicesDep, principal: PrincipalDep) -> dict[str, Any]:
    """`balance`: held by the account; `reserved`: held for unfinished tasks;
    `available`: what new tasks may spend (balance - reserved)."""
    standing = await run_in_threadpool(usage.standing, services.db, principal.account_id)
    return {
        "object": "credit_balance",
        "balance": ledger.to_credits(standing.balance_units),
        "reserved": ledger.to_credits(standing.reserved_units),
        "available": ledger.to_credits(standing.available_units),
        "user_group": principal.user_group,
    }


MAX_USAGE_DAYS = 366


#: Days a usage query may name: the calendar's ends would overflow the day arithmetic.
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(9999, 12, 30)


def parse_day(value: str | None, param: str, default: date) -> date:
    if value is None:
        return default
    try:
        day = date.fromisoformat(value) if value.isascii() else None
    except ValueError:
        day = None
    if day is None or not FIRST_DAY <= day <= LAST_DAY:
        raise APIError(
            400,
            f"invalid_{param}",
            f"{param} must be a date like 2026-11-24, from {FIRST_DAY} to {LAST_DAY}",
            param,
        )
    return day


@router.get("/v1/usage")
async def get_usage(
    services: ServicesDep, principal: PrincipalDep, start: str | None = None, end: str | None = None
) -> dict[str, Any]:
    """Credits charged to the account by UTC day, model and tier, `start` to `end`
    inclusive (default: the last 30 days)."""
    today = datetime.now(UTC).date()
    last = parse_day(end, "end", today)
    first = parse_day(start, "start", max(FIRST_DAY, last - timedelta(days=29)))
    if first > last:
        raise APIError(400, "invalid_start", "start must not be after end", "start")
    if (last - first).days >= MAX_USAGE_DAYS:
        raise APIError(400, "invalid_start", f"at most {MAX_USAGE_DAYS} days at a time", "start")
    days = await run_in_threadpool(usage.by_day, services.db, principal.account_id, first, last)
    data = [
        {
            "date": day.day.isoformat(),
            "model": day.model,
            "quality": day.quality,
            "tasks": day.tasks,
            "credits": ledger.to_credits(day.units),
        }
        for day in days
    ]
    return {
        "object": "usage",
        "start": first.isoformat(),
        "end": last.isoformat(),
        "total_credits": ledger.to_credits(sum(day.units for day in days)),
        "total_tasks": sum(day.tasks for day in days),
        "data": data,
    }
