"""The Python SDK for kreaserve (and for any krea-2-turbo compatible API): `Client` and
its asyncio twin `AsyncClient`, typed results, retries, and callback verification."""

from kreaserve.client._core import Retry
from kreaserve.client._events import EventsUnavailable
from kreaserve.client.aio import AsyncClient
from kreaserve.client.errors import KreaserveError, TaskFailed
from kreaserve.client.models import (
    Credits,
    Task,
    TaskError,
    TaskEvent,
    TaskInfo,
    TaskPage,
    Usage,
)
from kreaserve.client.sync import Client
from kreaserve.client.webhooks import WebhookVerificationError, verify_callback

__all__ = [
    "AsyncClient",
    "Client",
    "Credits",
    "EventsUnavailable",
    "KreaserveError",
    "Retry",
    "Task",
    "TaskError",
    "TaskEvent",
    "TaskFailed",
    "TaskInfo",
    "TaskPage",
    "Usage",
    "WebhookVerificationError",
    "verify_callback",
]
