"""The public contract (docs/api.md) as data: sizes, tiers, limits, codes, id format."""

from __future__ import annotations

import re
import secrets
import string
from enum import StrEnum

MODEL = "krea-2-turbo"
MODELS = (MODEL,)

#: (size, quality) -> (width, height). Exact, from the contract's table.
PIXELS: dict[tuple[str, str], tuple[int, int]] = {
    ("1:1", "1K"): (1024, 1024), ("1:1", "2K"): (2048, 2048),
    ("4:3", "1K"): (1152, 896), ("4:3", "2K"): (2304, 1728),
    ("3:4", "1K"): (896, 1152), ("3:4", "2K"): (1728, 2304),
    ("5:4", "1K"): (1152, 896), ("5:4", "2K"): (2240, 1792),
    ("4:5", "1K"): (896, 1152), ("4:5", "2K"): (1792, 2240),
    ("2:3", "1K"): (832, 1280), ("2:3", "2K"): (1664, 2496),
    ("3:2", "1K"): (1280, 832), ("3:2", "2K"): (2496, 1664),
    ("9:16", "1K"): (768, 1344), ("9:16", "2K"): (1472, 2688),
    ("16:9", "1K"): (1344, 768), ("16:9", "2K"): (2688, 1472),
    ("1:2", "1K"): (704, 1472), ("1:2", "2K"): (1408, 2816),
    ("2:1", "1K"): (1472, 704), ("2:1", "2K"): (2816, 1408),
}  # fmt: skip
SIZES = ("1:1", "4:3", "3:4", "5:4", "4:5", "2:3", "3:2", "9:16", "16:9", "1:2", "2:1")
QUALITIES = ("1K", "2K")

MAX_PROMPT_TOKENS = 640
SEED_MAX = 1_048_576
CALLBACK_URL_MAX = 2048
#: Seconds allowed for one callback attempt, and the waits after each failed one.
CALLBACK_TIMEOUT = 10.0
CALLBACK_RETRY_DELAYS = (1.0, 2.0, 4.0)
STEPS = 8

BILLING_RULE = "per_call"
DEFAULT_USER_GROUP = "default"

TASK_OBJECT = "image.generation.task"
TASK_TYPE = "image"
TASK_ID_PREFIX = "task-unified-"
_ID_ALPHABET = string.ascii_lowercase + string.digits
_ID_LENGTH = 8
_ID_SPACE = len(_ID_ALPHABET) ** _ID_LENGTH
TASK_ID_RE = re.compile(r"^task-unified-(\d{1,12})-([a-z0-9]{8})$")


class TaskStatus(StrEnum):
    """A task's status (the contract's `status`; also what the task table stores)."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


PENDING, PROCESSING, COMPLETED, FAILED, CANCELLED = (
    TaskStatus.PENDING,
    TaskStatus.PROCESSING,
    TaskStatus.COMPLETED,
    TaskStatus.FAILED,
    TaskStatus.CANCELLED,
)
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})

#: The `error.code` values a failed or cancelled task may carry.
TASK_ERROR_CODES = frozenset({
    "content_policy_violation", "invalid_parameters", "request_cancelled",
    "generation_failed_no_content", "service_error", "generation_timeout",
    "resource_exhausted", "quota_exceeded", "service_unavailable", "resource_not_found",
    "unknown_error",
})  # fmt: skip

#: HTTP status -> error `type` of a request error.
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    410: "not_found_error",
    413: "request_too_large_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "internal_server_error",
    503: "service_unavailable_error",
}


def new_task_id(created: int) -> str:
    """A task id: `task-unified-<created>-<8 random chars>` (41 bits of randomness).

    One draw below 36**8, written in base 36: about 1.6 reads of the OS's random source
    (a draw out of range is drawn again) where eight `secrets.choice` calls made about 14,
    each a point where a create's thread gives up the GIL (1.8 against 9.6 us); every
    suffix is as likely as before."""
    n = secrets.randbelow(_ID_SPACE)
    chars = []
    for _ in range(_ID_LENGTH):
        n, digit = divmod(n, len(_ID_ALPHABET))
        chars.append(_ID_ALPHABET[digit])
    return f"{TASK_ID_PREFIX}{created}-{''.join(chars)}"


def pixels(size: str, quality: str) -> tuple[int, int]:
    """Width and height of an output image."""
    return PIXELS[(size, quality)]
