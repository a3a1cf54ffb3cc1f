"""The contract's task object, built from a stored task: one renderer for the API's
answers and for callback bodies, so both are the same bytes; and the key object, the same
for the key routes, the admin API and the CLI's `--json`."""

from __future__ import annotations

import json
from typing import Any

from kreaserve import accounts, contract, ledger, schemas
from kreaserve.db.models import ApiKey, Task
from kreaserve.storage import ResultLinks


def task_object(task: Task, *, links: ResultLinks, estimated_time: int | None) -> dict[str, Any]:
    """The task as GET /v1/tasks/{id} shows it (the create answer is the same object)."""
    results = None
    if task.status == contract.COMPLETED:
        results = links.urls(list(task.result_keys or []), task.results_expire_at or 0)
    error = None
    if task.status in (contract.FAILED, contract.CANCELLED) and task.error_code:
        error = {"code": task.error_code, "message": task.error_message or ""}
    live = task.status not in contract.TERMINAL
    return schemas.task_body(
        task_id=task.id,
        created=task.created,
        model=task.model,
        status=task.status,
        progress=task.progress,
        can_cancel=live and not task.cancel_requested,
        estimated_time=estimated_time if live else None,
        price_credits=ledger.to_credits(task.price_units),
        user_group=task.user_group,
        seed=task.seed,
        results=results,
        error=error,
    )


#: Starlette's JSONResponse encoding, made once (`json.dumps` with arguments builds an
#: encoder on every call).
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))


def render_json(body: dict[str, Any]) -> bytes:
    """JSON bytes exactly as the API sends them (Starlette's JSONResponse encoding)."""
    return _ENCODER.encode(body).encode("utf-8")


def key_object(key: ApiKey, current_key_id: int | None = None) -> dict[str, Any]:
    """A key as its owner sees it: never the secret, only its shown prefix."""
    return {
        "object": "api_key",
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "created": int(key.created_at),
        "last_used": int(key.last_used_at) if key.last_used_at else None,
        "revoked": int(key.revoked_at) if key.revoked_at else None,
        "current": key.id == current_key_id,
    }


def new_key_object(new: accounts.NewKey, key: ApiKey) -> dict[str, Any]:
    return {**key_object(key), "key": new.secret}
