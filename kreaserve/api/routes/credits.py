"""GET /v1/credits (the account's balance, without spending anything) and GET /v1/usage."""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from kreaserve import ledger, usage
from kreaserve.api.deps import PrincipalDep, ServicesDep, get_principal, in_thread, services_of
from kreaserve.api.errors import APIError
from kreaserve.presenters import render_json

router = APIRouter()


async def get_credits(request: Request) -> Response:
    """`balance`: held by the account; `reserved`: held for unfinished tasks;
    `available`: what new tasks may spend (balance - reserved)."""
    # Served as the poll is (a DirectRoute of the app itself, kreaserve.api.app; the
    # balance read on the event loop where the database allows it): clients check it often.
    services = services_of(request)
    principal = await get_principal(request)
    found = await services.task_read.balance(principal.account_id)
    if isinstance(found, tuple):
        standing = ledger.Balance(*found)
    else:
        standing = await in_thread(
            services, functools.partial(usage.standing, services.db, principal.account_id)
        )
    body = {
        "object": "credit_balance",
        "balance": ledger.to_credits(standing.balance_units),
        "reserved": ledger.to_credits(standing.reserved_units),
        "available": ledger.to_credits(standing.available_units),
        "user_group": principal.user_group,
    }
    return Response(render_json(body), media_type="application/json")


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
