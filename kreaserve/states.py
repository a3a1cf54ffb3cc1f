"""The states of a task's billing, of a worker's engine and of a callback delivery, each the
one definition of the values the database stores (a task's own status is the contract's
`contract.TaskStatus`). A leaf: it imports nothing of kreaserve."""

from __future__ import annotations

from enum import StrEnum


class BillingState(StrEnum):
    """Where a task's price stands: held at creation, then charged or given back, once."""

    RESERVED = "reserved"
    CHARGED = "charged"
    RELEASED = "released"


class WorkerState(StrEnum):
    """A worker's engine, as its heartbeat reports it (and /readyz shows it)."""

    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"
    STOPPED = "stopped"


class DeliveryState(StrEnum):
    """A callback delivery in the outbox: waiting for (another) attempt, or done either way."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
