"""GET /healthz (the API is up) and GET /readyz (an engine is warm and taking work)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from kreaserve import worker_registry
from kreaserve.api.deps import ServicesDep
from kreaserve.states import WorkerState

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    """200 once any live worker reports a warm engine; 503 with the reasons otherwise.
    Warnings (such as noise-only tiny-random weights) are listed once, however many
    engines share them, either way."""
    workers = await run_in_threadpool(worker_registry.live_workers, services.db)
    engines: list[dict[str, Any]] = [
        {
            "worker": w.id,
            "state": w.state,
            "weights": w.weights,
            "device": w.device,
            "message": w.message,
        }
        for w in workers
    ]
    warnings = sorted({w.warning for w in workers if w.warning})
    ready = any(w.state == WorkerState.READY for w in workers)
    body: dict[str, Any] = {
        "status": "ready" if ready else "not_ready",
        "engines": engines,
        "warnings": warnings,
    }
    if not ready:
        body["error"] = {
            "code": "engine_not_ready",
            "message": "No engine is ready yet: the weights may still be loading, or no "
            "worker is running (start one with `kreaserve worker`).",
            "type": "service_unavailable_error",
        }
    return JSONResponse(body, status_code=200 if ready else 503)
