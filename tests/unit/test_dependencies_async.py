"""Every dependency of every API route is a coroutine function: FastAPI runs a plain `def`
dependency in the threadpool, so one sync dependency (it was `get_services`) cost every
authenticated request a thread hop and a fifth of a poll's work on the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from kreaserve.api.app import create_app
from kreaserve.config import Settings
from kreaserve.db import Database, upgrade
from kreaserve.storage import LocalStorage


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from _dependencies(sub)


def _routes(routes: list) -> Iterator[APIRoute]:  # type: ignore[type-arg]
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        inner = getattr(route, "original_router", None)  # an included router
        if inner is not None:
            yield from _routes(inner.routes)


def test_no_route_dependency_runs_in_the_threadpool(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'deps.db'}"
    upgrade(url)
    settings = Settings(data_dir=tmp_path, database_url=url, secret_key="deps")
    db = Database(url)
    try:
        app = create_app(settings, db=db, storage=LocalStorage(settings.images_dir))
        routes = list(_routes(app.router.routes))
        assert any(route.path == "/v1/tasks/{task_id}" for route in routes)
        sync = sorted(
            f"{route.path}: {dep.call.__name__}"
            for route in routes
            for dep in _dependencies(route.dependant)
            if dep.call is not None and not asyncio.iscoroutinefunction(dep.call)
        )
        assert sync == []
    finally:
        db.dispose()
