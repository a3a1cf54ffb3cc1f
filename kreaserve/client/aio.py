"""The asyncio client: the same methods as `kreaserve.client.Client`, awaited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import SSEError, aconnect_sse

from kreaserve.client import _core, _events
from kreaserve.client._core import Retry
from kreaserve.client._events import EventsUnavailable
from kreaserve.client.errors import TaskFailed
from kreaserve.client.models import Credits, Task, TaskEvent, TaskPage
from kreaserve.client.sync import _save

__all__ = ["AsyncClient", "EventsUnavailable"]


class AsyncClient:
    """Talks to one kreaserve (or hosted krea-2-turbo) base URL with one API key.

    The twin of `Client` (same arguments, methods and behaviour; see its docstrings),
    over `httpx.AsyncClient`; `transport` is an `httpx.AsyncBaseTransport`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        retry: Retry | None = None,
        poll_interval: float = 0.5,
        max_poll_interval: float = 2.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retry = retry or Retry()
        self.poll_interval, self.max_poll_interval = poll_interval, max_poll_interval
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            headers={"Authorization": f"Bearer {api_key}"},
            transport=transport,
        )
        self._files = httpx.AsyncClient(timeout=timeout, transport=transport, follow_redirects=True)
        self._sleep: Callable[[float], Awaitable[object]] = asyncio.sleep

    async def close(self) -> None:
        await self._http.aclose()
        await self._files.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def _send(
        self, http: httpx.AsyncClient, method: str, url: str, **kwargs: Any
    ) -> httpx.Response:
        retry_number = 0
        while True:
            try:
                response = await http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                delay = self.retry.delay_after_error(retry_number, method, exc, kwargs)
                if delay is None:
                    raise
            else:
                delay = self.retry.delay_after(retry_number, response)
                if delay is None:
                    return response
                await response.aclose()
            await self._sleep(delay)
            retry_number += 1

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return _core.json_of(await self._send(self._http, method, path, **kwargs))

    async def create(
        self,
        prompt: str,
        *,
        model: str = _core.DEFAULT_MODEL,
        size: str | None = None,
        quality: str | None = None,
        seed: int | None = None,
        nsfw_check: bool | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
        **extra: Any,
    ) -> Task:
        """See Client.create."""
        body = _core.create_body(
            prompt,
            model=model,
            size=size,
            quality=quality,
            seed=seed,
            nsfw_check=nsfw_check,
            callback_url=callback_url,
            extra=extra,
        )
        key = idempotency_key or _core.new_idempotency_key()
        return Task.model_validate(
            await self._call(
                "POST", "/v1/images/generations", json=body, headers={"Idempotency-Key": key}
            )
        )

    async def get(self, task_id: str) -> Task:
        return Task.model_validate(await self._call("GET", f"/v1/tasks/{task_id}"))

    async def cancel(self, task_id: str) -> Task:
        return Task.model_validate(await self._call("POST", f"/v1/tasks/{task_id}/cancel"))

    async def credits(self) -> Credits:
        return Credits.model_validate(await self._call("GET", "/v1/credits"))

    async def list_tasks(
        self, *, limit: int | None = None, status: str | None = None, cursor: str | None = None
    ) -> TaskPage:
        params = _core.list_params(limit, status, cursor)
        return TaskPage.model_validate(await self._call("GET", "/v1/tasks", params=params))

    async def iter_tasks(
        self, *, status: str | None = None, page_size: int | None = None
    ) -> AsyncIterator[Task]:
        cursor = None
        while True:
            page = await self.list_tasks(limit=page_size, status=status, cursor=cursor)
            for task in page.data:
                yield task
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def events(
        self, task_id: str, *, last_event_id: str | None = None, timeout: float = 3600.0
    ) -> AsyncIterator[TaskEvent]:
        """See Client.events."""
        stream = _events.Resume(task_id, self.retry, timeout, last_event_id)
        while True:
            headers, timeouts = stream.open(self._http.timeout)
            try:
                async with aconnect_sse(
                    self._http, "GET", stream.path, headers=headers, timeout=timeouts
                ) as source:
                    response = source.response
                    if response.status_code == 204:  # the end was seen already
                        return
                    if not response.is_success:
                        await response.aread()
                        stream.refused(response)
                    else:
                        async for sse in source.aiter_sse():
                            event = stream.received(sse)
                            if event is None:
                                continue
                            yield event
                            if event.event == _events.FINAL:
                                return
            except SSEError as exc:  # not an event stream: not kreaserve's events
                raise EventsUnavailable(str(exc)) from exc
            except httpx.TransportError:
                pass
            await self._sleep(stream.broke())

    async def follow(
        self, task_id: str, *, timeout: float = 3600.0, poll_interval: float | None = None
    ) -> AsyncIterator[Task]:
        """See Client.follow: the events stream, else polling."""
        deadline = time.monotonic() + timeout
        task = await self.get(task_id)
        yield task
        if task.done:
            return
        try:
            async for event in self.events(task_id, timeout=timeout):
                new = _events.updated(task, event)
                if new != task:
                    task = new
                    yield task
        except EventsUnavailable:
            pass
        if task.done:
            return
        polling = _core.Polling(
            self, task, deadline=deadline, timeout=timeout, poll_interval=poll_interval
        )
        while True:
            task = await self.get(task_id)
            if polling.changed(task):
                yield task
            if task.done:
                return
            await self._sleep(polling.delay(task))

    async def wait(
        self,
        task_id: str,
        *,
        timeout: float = 3600.0,
        poll_interval: float | None = None,
        on_update: Callable[[Task], None] | None = None,
    ) -> Task:
        async for task in self.follow(task_id, timeout=timeout, poll_interval=poll_interval):
            if on_update:
                on_update(task)
        return task

    async def download(self, url: str, path: str | Path | None = None) -> bytes:
        response = await self._send(self._files, "GET", url)
        if not response.is_success:
            raise _core.error_from(response)
        if path is not None:
            _save(Path(path), response.content)
        return response.content

    async def run(
        self,
        prompt: str,
        *,
        output: str | Path | None = None,
        timeout: float = 3600.0,
        on_update: Callable[[Task], None] | None = None,
        **options: Any,
    ) -> bytes:
        """See Client.run."""
        task = await self.create(prompt, **options)
        if on_update:
            on_update(task)
        task = await self.wait(task.id, timeout=timeout, on_update=on_update)
        if task.status != "completed" or not task.results:
            raise TaskFailed(task)
        return await self.download(task.results[0], output)
