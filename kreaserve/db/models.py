"""The tables: accounts, API keys, the credit ledger, tasks (the queue), workers and the
secrets every process of a fleet must share.

Times are Unix seconds as floats: the same on SQLite and PostgreSQL, no zone to get wrong.
Credits are integers in units of 1/10000 credit, so sums are exact.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from kreaserve.states import BillingState


class Base(DeclarativeBase):
    pass


class Account(Base):
    """Who pays: holds the balance and the credits reserved by unfinished tasks."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    user_group: Mapped[str] = mapped_column(String(64), default="default")
    #: granted minus charged, in credit units.
    balance_units: Mapped[int] = mapped_column(BigInteger, default=0)
    #: held for tasks that have not ended, in credit units.
    reserved_units: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    #: Standard Webhooks signing secret of the account's callbacks (`whsec_...`), made on
    #: first use.
    webhook_secret: Mapped[str | None] = mapped_column(String(100), nullable=True)
    #: the account's limits, whatever number of keys it has; None takes the server's default.
    requests_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_tasks_in_flight: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: most credits the account may spend (reserve) per UTC day, in units; None: no cap.
    daily_spend_cap_units: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: pending + processing tasks, kept by every reserve, charge and release (ledger.py),
    #: so the in-flight limit is checked in the reserving UPDATE itself.
    tasks_in_flight: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ApiKey(Base):
    """A bearer key of an account; only its SHA-256 is stored."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    #: the first characters of the key, safe to show and log.
    prefix: Mapped[str] = mapped_column(String(32))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    last_used_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class LedgerEntry(Base):
    """One append-only movement of credits: grant, reserve, charge or release."""

    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    task_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(16))
    amount_units: Mapped[int] = mapped_column(BigInteger)
    note: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class Task(Base):
    """An image generation task; rows with status 'pending' are the queue."""

    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_status_created", "status", "created_at"),
        Index("ix_tasks_account_created", "account_id", "created_at"),
        #: GET /v1/tasks?status=...: one account's tasks of one status, newest first.
        Index("ix_tasks_account_status_created", "account_id", "status", "created_at"),
        Index("ix_tasks_results_expire", "results_expire_at"),
        Index("ix_tasks_key_status", "api_key_id", "status"),
        # The queue estimate reads these (estimates.py); partial, so they cost nothing to
        # tasks in other states.
        Index(
            "ix_tasks_pending_quality",
            "quality",
            "created_at",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
        Index(
            "ix_tasks_completed_quality",
            "quality",
            "finished_at",
            sqlite_where=text("status = 'completed'"),
            postgresql_where=text("status = 'completed'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), nullable=True)
    model: Mapped[str] = mapped_column(String(64))
    prompt: Mapped[str] = mapped_column(Text)
    size: Mapped[str] = mapped_column(String(8))
    quality: Mapped[str] = mapped_column(String(4))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    nsfw_check: Mapped[bool] = mapped_column(Boolean, default=False)
    callback_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: The W3C trace context of the create request, continued by its callback.
    traceparent: Mapped[str | None] = mapped_column(String(55), nullable=True)
    #: The image file's format (`kreaserve.images.FORMATS`) and its JPEG/WebP quality.
    output_format: Mapped[str] = mapped_column(String(8), server_default="png")
    output_quality: Mapped[int] = mapped_column(Integer, server_default="90")

    status: Mapped[str] = mapped_column(String(16))
    progress: Mapped[int] = mapped_column(Integer, default=0)
    #: what a processing task is doing (`kreaserve.phases`), written by the worker's
    #: lease renewals; None before its first claim.
    phase: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)

    #: Unix seconds of creation, exactly the `created` of the contract.
    created: Mapped[int] = mapped_column(BigInteger)
    #: The same moment with sub-second precision, for queue order.
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)

    worker_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)

    price_units: Mapped[int] = mapped_column(BigInteger)
    user_group: Mapped[str] = mapped_column(String(64), default="default")
    #: reserved -> charged | released; guards against charging twice.
    billing_state: Mapped[str] = mapped_column(String(16), default=BillingState.RESERVED)

    #: storage keys of the images, once completed.
    result_keys: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    results_expire_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    results_purged: Mapped[bool] = mapped_column(Boolean, default=False)
    #: seconds the engine spent on this task, for estimates.
    engine_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)


class WorkerRecord(Base):
    """A worker process and the state of its engine, renewed by heartbeats."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    #: starting | ready | failed | stopped
    state: Mapped[str] = mapped_column(String(16))
    weights: Mapped[str | None] = mapped_column(String(500), nullable=True)
    device: Mapped[str | None] = mapped_column(String(64), nullable=True)
    warning: Mapped[str | None] = mapped_column(Text, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float)


class CallbackDelivery(Base):
    """The callback outbox: one delivery of a task's end to its callback_url.

    Written in the same transaction that ends the task, so no end is ever without its
    callback; claimed by one sender at a time through a lock with an expiry."""

    __tablename__ = "callback_deliveries"
    __table_args__ = (Index("ix_callback_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    url: Mapped[str] = mapped_column(Text)
    #: the `webhook-id` header: the same on every attempt and redelivery of a task's end.
    webhook_id: Mapped[str] = mapped_column(String(64))
    #: pending | succeeded | failed
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    locked_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    locked_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: the body, rendered at the first attempt and sent unchanged on every retry.
    body: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class CallbackAttempt(Base):
    """One HTTP attempt of a delivery: when, how long, and what came back."""

    __tablename__ = "callback_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("callback_deliveries.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[float] = mapped_column(Float)
    duration_seconds: Mapped[float] = mapped_column(Float)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class RateWindow(Base):
    """Requests of one account in one minute (`bucket`: requests, key creations): the
    quota every API process leases from, so a limit holds across processes."""

    __tablename__ = "rate_windows"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    bucket: Mapped[str] = mapped_column(String(16), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class ServiceSecret(Base):
    """A secret every process of a fleet must agree on (the URL-signing key), generated
    once by whichever process needs it first; see kreaserve/service_secrets.py."""

    __tablename__ = "service_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[float] = mapped_column(Float)


class IdempotencyKey(Base):
    """An `Idempotency-Key` of a create: which task it named, from which body, and when.

    Written in the create's transaction; purged after a day (kreaserve/idempotency.py)."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_created", "created_at"),)

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    #: SHA-256 of the validated body, so the same key with another body is refused.
    request_hash: Mapped[str] = mapped_column(String(64))
    #: not a foreign key: the key row is written before the task, in the same transaction.
    task_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
