"""Request-scoped dependencies: the services, the caller's account, the JSON body."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from starlette.requests import ClientDisconnect

from kreaserve import accounts, limits
from kreaserve.api.errors import APIError
from kreaserve.api.key_reads import KeyReads
from kreaserve.api.single_flight import SingleFlight
from kreaserve.auth import KeyCache
from kreaserve.config import Settings
from kreaserve.db import Database
from kreaserve.db.task_read import LoopRead
from kreaserve.estimates import QueueEstimates
from kreaserve.moderation import PromptModerator
from kreaserve.storage import ResultLinks, Storage


@dataclass
class Services:
    """What the routes work with; built once by create_app."""

    settings: Settings
    db: Database
    storage: Storage
    url_secret: bytes
    links: ResultLinks
    moderator: PromptModerator
    keys: KeyCache
    quotas: limits.QuotaLeases
    estimates: QueueEstimates
    #: the poll's read on the event loop (`kreaserve.db.task_read`)
    task_read: LoopRead
    #: the threads of `in_thread` (as many as anyio's threadpool has)
    threads: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(40, thread_name_prefix="kreaserve-api")
    )
    #: the threads of `in_create_thread`: `settings.create_concurrency` of them, taking
    #: work in arrival order (a ThreadPoolExecutor's queue is first in, first out)
    create_threads: ThreadPoolExecutor = field(init=False)
    #: the reads of `keys`: one per key at a time, started before an entry expires
    key_reads: KeyReads = field(init=False)
    #: one lease of an account's request limit at a time (`spend_request`)
    request_leases: SingleFlight = field(init=False)

    def __post_init__(self) -> None:
        self.create_threads = ThreadPoolExecutor(
            self.settings.create_concurrency, thread_name_prefix="kreaserve-create"
        )
        run = functools.partial(_run_in, self.threads)
        self.key_reads = KeyReads(run)
        self.request_leases = SingleFlight(run, "leasing an account's requests")


T = TypeVar("T")


async def in_thread(services: Services, call: Callable[[], T]) -> T:
    """`call()` in a worker thread, for the hottest routes (a poll).

    `run_in_threadpool` (anyio) pays for a capacity limiter, a cancel scope and its own
    worker queue: 55 us of CPU per call here, against 19 for asyncio's executor hand-off.
    The request's context variables go along, as with anyio."""
    return await _run_in(services.threads, call)


async def in_create_thread(services: Services, call: Callable[[], T]) -> T:
    """`call()` (a create's moderation and insert) in one of the few create threads.

    With one thread per waiting request (anyio's 40), 16 clients' creates contended for
    the GIL and the database at once and the slowest answer took twice the median;
    measured with wrk on 2 cores, a few threads in arrival order gave the same creates
    per second with a p99 of 59-68 ms instead of 94-105 on SQLite, and 93-134 instead
    of 295-309 on PostgreSQL (BENCHMARKS.md).

    Cancelling the awaiting request (a server shutting down; a client that goes away does
    not cancel it) drops a create that still waits for a thread, so nothing is made for
    it; one already running finishes, and its task is created and reserved although the
    request returns at once (anyio's pool made the request wait for the thread)."""
    return await _run_in(services.create_threads, call)


async def _run_in(threads: ThreadPoolExecutor, call: Callable[[], T]) -> T:
    """`call()` on `threads`, with the request's context variables."""
    context = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(threads, functools.partial(context.run, call))


def services_of(request: Request) -> Services:
    return request.app.state.services


async def get_services(request: Request) -> Services:
    """`async` although it waits for nothing: FastAPI runs a plain `def` dependency in the
    threadpool, which cost every request a thread hop."""
    return services_of(request)


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_principal(request: Request) -> accounts.Principal:
    """The caller, from `Authorization: Bearer <key>`; 401 when absent or not valid.

    It reads the services itself rather than through `ServicesDep`: FastAPI resolves each
    node of a route's dependency tree per request, and a nested one cost a poll about as
    much as its database read."""
    services = services_of(request)
    header = request.headers.get("authorization")
    if not header:
        raise APIError(
            401, "missing_api_key", "No API key: send it as 'Authorization: Bearer <key>'."
        )
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or " " in key:
        raise APIError(
            401, "invalid_authorization_header", "The Authorization header must be 'Bearer <key>'."
        )

    # The key and the account's quota are usually in memory: no database, no thread.
    principal = await services.key_reads.principal(services.keys, accounts.hash_key(key))
    if principal is None:
        raise APIError(401, "invalid_api_key", "The API key is not valid or has been revoked.")
    request.state.account_id = principal.account_id  # for the access log
    rpm = principal.requests_per_minute or services.settings.requests_per_minute
    refusal = await spend_request(services, principal.account_id, rpm)
    if isinstance(refusal, limits.Refusal):
        raise rate_limited(refusal)
    services.keys.note_used(principal.key_id)
    return principal


async def spend_request(services: Services, account_id: int, limit: int) -> limits.Refusal | None:
    """One of the account's requests this minute, from this process's lease; when it is
    spent, the requests waiting share one new lease (`QuotaLeases.renew`) rather than
    each taking its own: under load a process held two to three times what it used, away
    from the account's other processes (BENCHMARKS.md). Requests arriving meanwhile may
    spend the new lease before a waiter wakes; it then waits for the next one. Each round
    is one write for every waiter, and the minute's limit ends it (a refusal)."""
    quotas = services.quotas
    while (refusal := quotas.take_local(account_id, limits.REQUESTS, limit)) is False:
        await services.request_leases.wait(
            (account_id, limit),
            functools.partial(quotas.renew, account_id, limits.REQUESTS, limit),
        )
    return refusal


def rate_limited(refusal: limits.Refusal) -> APIError:
    """The contract's 429, with Retry-After."""
    return APIError(
        429, refusal.code, refusal.message, headers={"Retry-After": str(refusal.retry_after)}
    )


PrincipalDep = Annotated[accounts.Principal, Depends(get_principal)]


async def read_json_body(request: Request, limit: int) -> Any:
    """The decoded JSON body; 413 past `limit` bytes (also for chunked bodies), 400 when
    it is not JSON, holds NaN or Infinity (not JSON, though Python reads them), a number
    of more than 4,300 digits, or text no database stores (NUL, lone surrogates)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise APIError(400, "invalid_content_length", "Content-Length is not a number.")
        if int(declared) > limit:
            raise APIError(
                413, "request_too_large", f"The request body is larger than {limit} bytes."
            )
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise APIError(
                    413, "request_too_large", f"The request body is larger than {limit} bytes."
                )
            chunks.append(chunk)
    except ClientDisconnect:
        raise APIError(
            400, "client_disconnected", "The client went away before its request body arrived."
        ) from None
    raw = b"".join(chunks)
    if not raw.strip():
        raise APIError(400, "invalid_json", "The request body is empty; send a JSON object.")
    try:
        payload = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise APIError(400, "invalid_json", "The request body is nested too deeply.") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, over-long integers
        raise APIError(400, "invalid_json", f"The request body is not valid JSON: {exc}.") from None
    _check_text(payload)
    return payload


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check_text(payload: Any) -> None:
    """400 naming the top-level field when any string (or key) holds NUL or a lone
    surrogate: SQLite and PostgreSQL drivers fail on them only when they are stored."""
    stack: list[tuple[Any, str | None]] = [(payload, None)]
    while stack:
        value, field = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                name = field or (key if "\x00" not in key and _encodable(key) else None)
                stack.append((key, name))
                stack.append((item, name))
        elif isinstance(value, list):
            stack.extend((item, field) for item in value)
        elif isinstance(value, str) and ("\x00" in value or not _encodable(value)):
            name = field or "request"
            raise APIError(
                400,
                f"invalid_{field}" if field else "invalid_json",
                f"{name} must be text without NUL characters or lone surrogates",
                field,
            )


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
