"""The baseline of bench/api_throughput.py: a bare FastAPI app with kreaserve's routes
and answer sizes, and none of its work.

It parses the create body with a pydantic model of the same fields and answers fixed
JSON of the same shape and size as kreaserve's task, credits and health answers, so the
ratio measures what kreaserve adds to the framework (auth, database, moderation,
estimates), not the framework itself.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict

from kreaserve.schemas import task_body

app = FastAPI()

#: What kreaserve answers for a fresh 1K task (built by its own renderer: same shape, same size).
TASK: dict[str, Any] = task_body(
    task_id="task-unified-1764424800-abcdefgh",
    created=1764424800,
    model="krea-2-turbo",
    status="pending",
    progress=0,
    can_cancel=True,
    estimated_time=5,
    price_credits=0.45,
    user_group="default",
    seed=1234567890,
)
CREDITS: dict[str, Any] = {
    "object": "credit_balance",
    "balance": 999999.55,
    "reserved": 0.45,
    "available": 999999.1,
    "user_group": "default",
}


class CreateBody(BaseModel):
    """The fields of POST /v1/images/generations."""

    model_config = ConfigDict(strict=True, extra="ignore")

    model: str
    prompt: str
    size: str | None = None
    quality: str | None = None
    seed: int | None = None
    nsfw_check: bool | None = None
    callback_url: str | None = None


@app.post("/v1/images/generations")
async def create(body: CreateBody) -> dict[str, Any]:
    return TASK


@app.get("/v1/tasks/{task_id}")
async def poll(task_id: str) -> dict[str, Any]:
    return TASK


@app.get("/v1/credits")
async def credits() -> dict[str, Any]:
    return CREDITS


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
