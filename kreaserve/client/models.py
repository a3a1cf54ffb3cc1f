"""Typed results of the SDK: pydantic models of the contract's shapes.

Every model allows extra fields (the contract lets servers add fields) and keeps them, so
a newer server never breaks an older client, and fields the hosted API does not send
(kreaserve's `seed`, the whole credits answer) are optional.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

TERMINAL = frozenset({"completed", "failed", "cancelled"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class TaskInfo(_Model):
    can_cancel: bool = False
    #: seconds until the result is expected; only while the task is live.
    estimated_time: int | None = None


class Usage(_Model):
    billing_rule: str | None = None
    credits_reserved: float | None = None
    user_group: str | None = None


class TaskError(_Model):
    """Why a task failed or was cancelled: one of the contract's task error codes."""

    code: str
    message: str = ""


class Task(_Model):
    """The task object of POST /v1/images/generations and GET /v1/tasks/{id}."""

    id: str
    created: int
    model: str
    status: str
    object: str = "image.generation.task"
    type: str = "image"
    progress: int = 0
    task_info: TaskInfo = TaskInfo()
    usage: Usage | None = None
    #: absolute URLs of the images once completed, valid 24 h.
    results: list[str] | None = None
    error: TaskError | None = None
    #: the seed used (kreaserve adds it; the hosted API may not send it).
    seed: int | None = None
    #: what a processing task is doing (`encoding`, `denoising k/8`, `decoding`,
    #: `checking`, `storing`): set from kreaserve's events stream, None otherwise.
    phase: str | None = None
    #: a pending task's place in the queue (1: next), from kreaserve's events stream.
    position: int | None = None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


class TaskEvent(_Model):
    """One event of GET /v1/tasks/{id}/events (kreaserve's): `queued` (with `position`),
    `progress` (with `phase` and `progress`), then `task`, the ended task object."""

    event: str
    #: grows as the task advances; sent back as Last-Event-ID to resume.
    id: str | None = None
    status: str | None = None
    position: int | None = None
    phase: str | None = None
    progress: int | None = None
    estimated_time: int | None = None
    #: the task object, in the last event only.
    task: Task | None = None


class TaskPage(_Model):
    """One page of GET /v1/tasks (kreaserve's; not part of the hosted API)."""

    data: list[Task]
    has_more: bool = False
    next_cursor: str | None = None
    object: str = "list"


class Credits(_Model):
    """GET /v1/credits. The contract names no fields, so all are optional."""

    balance: float | None = None
    reserved: float | None = None
    available: float | None = None
    user_group: str | None = None
    object: str | None = None
