"""What the SDK raises: an error answer of the API, and a task that ended without images."""

from __future__ import annotations

from kreaserve.client.models import Task


class KreaserveError(Exception):
    """An error answer of the API, in the contract's error shape.

    `retry_after` holds the answer's Retry-After in seconds (429, 503) when it had one."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        type_: str = "",
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.type = status, code, message, type_
        self.param, self.retry_after = param, retry_after


class TaskFailed(Exception):
    """`run()` followed a task that ended failed or cancelled; `task.error` says why."""

    def __init__(self, task: Task) -> None:
        code = task.error.code if task.error else "unknown_error"
        message = task.error.message if task.error else ""
        super().__init__(f"task {task.id} {task.status}: {code} {message}".rstrip())
        self.task = task
