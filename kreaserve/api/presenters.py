"""Turn stored tasks into the contract's task object."""

from __future__ import annotations

import math
from typing import Any

from kreaserve import contract, ledger, queue, schemas
from kreaserve.api.deps import Services
from kreaserve.db.models import Task
from kreaserve.storage import signing


def task_object(services: Services, task: Task, with_estimate: bool = True) -> dict[str, Any]:
    """The task as GET /v1/tasks/{id} shows it (the create answer is the same object)."""
    results = None
    if task.status == contract.COMPLETED:
        expires = math.floor(task.results_expire_at or 0)
        results = [
            signing.signed_url(services.settings.base_url, services.url_secret, key, expires)
            for key in task.result_keys or []
        ]
    error = None
    if task.status in (contract.FAILED, contract.CANCELLED) and task.error_code:
        error = {"code": task.error_code, "message": task.error_message or ""}
    live = task.status not in contract.TERMINAL
    estimate = queue.estimate_seconds(services.db, task) if (live and with_estimate) else None
    return schemas.task_body(
        task_id=task.id, created=task.created, model=task.model, status=task.status,
        progress=task.progress, can_cancel=live and not task.cancel_requested,
        estimated_time=estimate, price_credits=ledger.to_credits(task.price_units),
        user_group=task.user_group, seed=task.seed, results=results, error=error,
    )
