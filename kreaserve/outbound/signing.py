"""Standard Webhooks signatures (https://www.standardwebhooks.com), via its reference library.

`webhook-signature` is `v1,` + base64 HMAC-SHA256 of `id.timestamp.body` under the
account's `whsec_` secret; `webhook-id` stays the same across retries so receivers can
drop duplicates.
"""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh signing secret: `whsec_` + 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signed_headers(secret: str, webhook_id: str, body: bytes, timestamp: float) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt of `body`."""
    moment = datetime.fromtimestamp(int(timestamp), tz=UTC)
    signature = Webhook(secret).sign(webhook_id, moment, body.decode("utf-8"))
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": signature,
    }
