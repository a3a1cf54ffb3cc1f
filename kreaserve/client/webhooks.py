"""Verify kreaserve callbacks on the receiving side (Standard Webhooks signatures)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

__all__ = ["WebhookVerificationError", "verify_callback"]


def verify_callback(secret: str, headers: Mapping[str, str], body: bytes | str) -> dict[str, Any]:
    """The task object of a callback, after checking its signature and timestamp (within
    5 minutes); raises WebhookVerificationError for a forged, altered or stale callback.

    `secret` is the account's `whsec_...` (GET /v1/callbacks/secret); `body` must be the
    raw request body, not re-serialised JSON."""
    lowered = {key.lower(): value for key, value in headers.items()}
    return Webhook(secret).verify(body, lowered)
