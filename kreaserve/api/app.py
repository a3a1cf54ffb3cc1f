"""create_app: the FastAPI application over a database and a storage, nothing global."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from kreaserve import auth, heap, limits
from kreaserve.api import errors, openapi
from kreaserve.api.deps import Services
from kreaserve.api.direct import DirectRoute
from kreaserve.api.observe import ObserveMiddleware
from kreaserve.api.routes import (
    admin,
    callbacks,
    credits,
    docs,
    events,
    files,
    health,
    images,
    keys,
    metrics,
    openai,
    pages,
    task_list,
    tasks,
)
from kreaserve.config import Settings
from kreaserve.db import Database
from kreaserve.db.task_read import loop_read
from kreaserve.estimates import QueueEstimates
from kreaserve.moderation import PromptModerator
from kreaserve.service_secrets import url_signing_key
from kreaserve.storage import ResultLinks, Storage, open_storage

log = logging.getLogger("kreaserve.api")


class Background(Protocol):
    """Something that runs beside the API for its lifetime (the embedded worker)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


async def flush_last_used(keys: auth.KeyCache) -> None:
    """Write the keys' last use every half resolution, off the request path."""
    while True:
        await asyncio.sleep(auth.LAST_USED_RESOLUTION / 2)
        try:
            await run_in_threadpool(keys.flush_last_used)
        except Exception:  # noqa: BLE001 - the next pass writes them
            log.exception("recording when keys were last used failed")


def create_app(
    settings: Settings,
    *,
    db: Database | None = None,
    storage: Storage | None = None,
    background: Sequence[Background] = (),
) -> FastAPI:
    """Build the app; `background` services start and stop with it."""
    db = db or Database(settings.resolved_database_url)
    storage = storage or open_storage(settings)
    url_secret = url_signing_key(settings, db)
    services = Services(
        settings=settings,
        db=db,
        storage=storage,
        url_secret=url_secret,
        links=ResultLinks.for_settings(settings, storage, url_secret),
        moderator=PromptModerator(settings.moderation_config()),
        keys=auth.KeyCache(db, settings.auth_cache_seconds),
        quotas=limits.QuotaLeases(db),
        estimates=QueueEstimates(db),
        task_read=loop_read(db.engine),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Load the prompt classifier (the first start on a machine also exports it, about
        # 15 s) now, not on the first request. The token counter's encoding (37 MB) is not
        # built here: only a prompt over 640 bytes needs it (kreaserve.tokens.count_if_over).
        await run_in_threadpool(services.moderator.warm)
        for item in background:
            await run_in_threadpool(item.start)
        heap.freeze_startup_heap()  # after the loads: full collections skip what they made
        flusher = asyncio.create_task(flush_last_used(services.keys))
        try:
            yield
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            try:
                await run_in_threadpool(services.keys.flush_last_used)
            except Exception:  # noqa: BLE001 - a last use lost is no reason to hang
                log.exception("recording when keys were last used failed")
            for item in reversed(background):
                await run_in_threadpool(item.stop)
            services.threads.shutdown(wait=False)
            # Creates still queued are dropped, not started after the shutdown.
            services.create_threads.shutdown(wait=False, cancel_futures=True)
            await services.task_read.aclose()

    app = FastAPI(
        title="kreaserve", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.services = services
    errors.install(app)
    # Routers are matched one after another: the busiest first (a health probe passing
    # nine routers cost 60 us more than one passing none). The poll, the busiest of all,
    # is a route of the app itself: FastAPI matches a route of an included router twice
    # (the router, then its route) through a layer of its own; and served directly
    # (kreaserve.api.direct).
    app.router.add_api_route(
        "/v1/tasks/{task_id}", tasks.get_task, methods=["GET"], route_class_override=DirectRoute
    )
    # So is GET /v1/credits (FastAPI builds a route of an included router its own handler).
    app.router.add_api_route(
        "/v1/credits",
        credits.get_credits,
        methods=["GET"],
        response_model=dict[str, Any],
        route_class_override=DirectRoute,
    )
    for module in (
        health,
        tasks,
        images,
        credits,
        events,
        task_list,
        callbacks,
        keys,
        admin,
        pages,
        files,
        metrics,
        docs,
        openai,
    ):
        app.include_router(module.router)
    app.mount(docs.ASSETS, docs.assets, name="docs-assets")
    openapi.install(app)
    app.add_middleware(ObserveMiddleware)
    return app
