"""GET /metrics: Prometheus text format (see kreaserve.metrics)."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from kreaserve import metrics
from kreaserve.api.deps import ServicesDep
from kreaserve.api.errors import APIError

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def scrape(request: Request, services: ServicesDep) -> Response:
    """Counters of this process (all processes in multiprocess mode) and the queue, read
    from the database now. With KREASERVE_METRICS_TOKEN set, a bearer token is required."""
    token = services.settings.metrics_token
    if token:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise APIError(
                401,
                "invalid_metrics_token",
                "GET /metrics needs 'Authorization: Bearer <KREASERVE_METRICS_TOKEN>'.",
            )
    body = await run_in_threadpool(metrics.render, services.db)
    return Response(body, media_type=metrics.CONTENT_TYPE)
