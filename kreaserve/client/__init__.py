"""The Python client for kreaserve (and for any krea-2-turbo compatible API)."""

from kreaserve.client.sync import Client, KreaserveError
from kreaserve.client.webhooks import WebhookVerificationError, verify_callback

__all__ = ["Client", "KreaserveError", "WebhookVerificationError", "verify_callback"]
