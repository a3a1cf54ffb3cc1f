"""Moderate a prompt and enqueue its task, with every refusal as the contract's error:
shared by the contract's create and the OpenAI-compatible endpoint."""

from __future__ import annotations

import logging

from kreaserve import accounts, idempotency, ledger, task_queue
from kreaserve.api.deps import Services, rate_limited
from kreaserve.api.errors import APIError
from kreaserve.db.models import Task
from kreaserve.moderation import ModerationUnavailable

log = logging.getLogger("kreaserve.api")


def moderate(services: Services, params: task_queue.NewTask) -> None:
    """Raise the contract's 400 (refused) or 503 (moderation down) unless the prompt may
    be generated. Blocking: call it off the event loop."""
    try:
        decision = services.moderator.check(params.prompt, strict=params.nsfw_check)
    except ModerationUnavailable:
        log.exception("prompt moderation is unavailable; refusing the task")
        raise APIError(
            503,
            "moderation_unavailable",
            "Content moderation is unavailable, so no task can be accepted; retry shortly.",
            headers={"Retry-After": "30"},
        ) from None
    if not decision.allowed:
        raise APIError(400, "content_policy_violation", decision.message, "prompt")


def price_of(services: Services, principal: accounts.Principal, params: task_queue.NewTask) -> int:
    """The task's price in credit units, for this caller's group."""
    return ledger.to_units(
        services.settings.price(params.model, principal.user_group, params.quality)
    )


def enqueue(
    services: Services,
    principal: accounts.Principal,
    params: task_queue.NewTask,
    price: int,
    key: idempotency.Key | None = None,
) -> Task:
    """Reserve and enqueue one task (blocking). Raises the contract's 402, 409 or 429, or
    idempotency.Replayed with the task `key` already names."""
    try:
        task = task_queue.create(
            services.db,
            principal.account_id,
            principal.key_id,
            principal.user_group,
            params,
            price,
            services.settings.max_tasks_in_flight,
            key,
        )
    except idempotency.KeyReused:
        raise APIError(
            409,
            "idempotency_key_reused",
            f"This {idempotency.HEADER} was used in the last 24 hours for a request with a "
            "different body; use a new key for a new request.",
            idempotency.HEADER,
        ) from None
    except task_queue.LimitReached as exc:
        raise rate_limited(exc.refusal) from None
    except task_queue.DailyCapReached as exc:
        raise APIError(
            402,
            "daily_spend_cap_reached",
            f"This task would pass the account's daily spend cap of "
            f"{ledger.to_credits(exc.cap_units)} credits (UTC day).",
        ) from None
    except task_queue.InsufficientCredits:
        raise APIError(
            402,
            "insufficient_credits",
            f"This task costs {ledger.to_credits(price)} credits, more than the account's "
            "available balance (see GET /v1/credits).",
        ) from None
    services.estimates.note_created(task)
    return task
