"""Turn stored tasks into the contract's task object, with a live estimate."""

from __future__ import annotations

from typing import Any

from kreaserve import contract, presenters
from kreaserve.api.deps import Services
from kreaserve.db.models import Task
from kreaserve.estimates import Snapshot


def task_answer(
    services: Services, task: Task, with_estimate: bool = True, snapshot: Snapshot | None = None
) -> dict[str, Any]:
    """The task object as GET /v1/tasks/{id} shows it, with its live estimate (the create
    answer is the same object; `kreaserve.presenters.task_object` is the estimate-free one).

    The estimate comes from `snapshot` or else this process's queue snapshot, which this
    may then read (at most once a second): call it off the event loop without one."""
    live = task.status not in contract.TERMINAL
    estimate = None
    if live and with_estimate:
        estimate = snapshot.estimate(task) if snapshot else services.estimates.estimate(task)
    return presenters.task_object(task, links=services.links, estimated_time=estimate)
