"""The synchronous client over httpx: create, get, cancel, list, credits, follow/wait,
download and `run` (all of it in one call). `kreaserve.client.aio` mirrors it for asyncio."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import SSEError, connect_sse

from kreaserve.client import _core, _events
from kreaserve.client._core import Retry
from kreaserve.client._events import EventsUnavailable
from kreaserve.client.errors import KreaserveError, TaskFailed
from kreaserve.client.models import Credits, Task, TaskEvent, TaskPage

__all__ = ["Client", "EventsUnavailable", "KreaserveError", "Retry", "TaskFailed"]


class Client:
    """Talks to one kreaserve (or hosted krea-2-turbo) base URL with one API key.

    Only the contract's endpoints and fields are needed, so pointing `base_url` at the
    hosted API works too (`list_tasks` is kreaserve's own). `transport` is httpx's, for
    tests (`httpx.MockTransport`) or custom networking; it also carries the downloads."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        retry: Retry | None = None,
        poll_interval: float = 0.5,
        max_poll_interval: float = 2.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retry = retry or Retry()
        self.poll_interval, self.max_poll_interval = poll_interval, max_poll_interval
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            headers={"Authorization": f"Bearer {api_key}"},
            transport=transport,
        )
        # Result URLs may point, or redirect, elsewhere (S3): they are signed, so no key
        # goes with them.
        self._files = httpx.Client(timeout=timeout, transport=transport, follow_redirects=True)
        self._sleep: Callable[[float], object] = time.sleep

    def close(self) -> None:
        self._http.close()
        self._files.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _send(self, http: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request with the retry policy; the same headers (so the same
        Idempotency-Key) on every try."""
        retry_number = 0
        while True:
            try:
                response = http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                delay = self.retry.delay_after_error(retry_number, method, exc, kwargs)
                if delay is None:
                    raise
            else:
                delay = self.retry.delay_after(retry_number, response)
                if delay is None:
                    return response
                response.close()
            self._sleep(delay)
            retry_number += 1

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return _core.json_of(self._send(self._http, method, path, **kwargs))

    def create(
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
        """Create a task (status pending). Unset options take the server's defaults;
        `extra` fields are sent as they are.

        An `Idempotency-Key` header (`idempotency_key`, or one made here) goes with the
        request and stays the same on its retries, so a create is resent after any
        transient network error (a read time-out, a cut connection) and the server
        answers the resent one with the task the first created, charged once."""
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
            self._call(
                "POST", "/v1/images/generations", json=body, headers={"Idempotency-Key": key}
            )
        )

    def get(self, task_id: str) -> Task:
        return Task.model_validate(self._call("GET", f"/v1/tasks/{task_id}"))

    def cancel(self, task_id: str) -> Task:
        return Task.model_validate(self._call("POST", f"/v1/tasks/{task_id}/cancel"))

    def credits(self) -> Credits:
        return Credits.model_validate(self._call("GET", "/v1/credits"))

    def list_tasks(
        self, *, limit: int | None = None, status: str | None = None, cursor: str | None = None
    ) -> TaskPage:
        """One page of the account's tasks, newest first (kreaserve's GET /v1/tasks)."""
        params = _core.list_params(limit, status, cursor)
        return TaskPage.model_validate(self._call("GET", "/v1/tasks", params=params))

    def iter_tasks(
        self, *, status: str | None = None, page_size: int | None = None
    ) -> Iterator[Task]:
        """Every task of the account, newest first, fetching pages as needed."""
        cursor = None
        while True:
            page = self.list_tasks(limit=page_size, status=status, cursor=cursor)
            yield from page.data
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def events(
        self, task_id: str, *, last_event_id: str | None = None, timeout: float = 3600.0
    ) -> Iterator[TaskEvent]:
        """kreaserve's live events of a task (GET /v1/tasks/{id}/events): `queued`,
        `progress`, then `task` (the ended task), then the end; from after
        `last_event_id` when given. A broken stream is resumed with Last-Event-ID, up to
        `retry.retries` times in a row. Raises EventsUnavailable when the server has no
        events (or they stay broken), KreaserveError for an error answer, TimeoutError."""
        stream = _events.Resume(task_id, self.retry, timeout, last_event_id)
        while True:
            headers, timeouts = stream.open(self._http.timeout)
            try:
                with connect_sse(
                    self._http, "GET", stream.path, headers=headers, timeout=timeouts
                ) as source:
                    response = source.response
                    if response.status_code == 204:  # the end was seen already
                        return
                    if not response.is_success:
                        response.read()
                        stream.refused(response)
                    else:
                        for sse in source.iter_sse():
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
            self._sleep(stream.broke())

    def follow(
        self, task_id: str, *, timeout: float = 3600.0, poll_interval: float | None = None
    ) -> Iterator[Task]:
        """Yield the task at every change of status, progress or phase, the last one ended.

        It follows the events stream (`events`), and polls GET /v1/tasks/{id} (see
        PollRhythm) where the server has none (the hosted API) or it stays broken."""
        deadline = time.monotonic() + timeout
        task = self.get(task_id)
        yield task
        if task.done:
            return
        try:
            for event in self.events(task_id, timeout=timeout):
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
            task = self.get(task_id)
            if polling.changed(task):
                yield task
            if task.done:
                return
            self._sleep(polling.delay(task))

    def wait(
        self,
        task_id: str,
        *,
        timeout: float = 3600.0,
        poll_interval: float | None = None,
        on_update: Callable[[Task], None] | None = None,
    ) -> Task:
        """Follow the task to its end; `on_update` sees every change."""
        for task in self.follow(task_id, timeout=timeout, poll_interval=poll_interval):
            if on_update:
                on_update(task)
        return task

    def download(self, url: str, path: str | Path | None = None) -> bytes:
        """The bytes of a result URL; with `path`, also saved there (whole or not at all)."""
        response = self._send(self._files, "GET", url)
        if not response.is_success:
            raise _core.error_from(response)
        if path is not None:
            _save(Path(path), response.content)
        return response.content

    def run(
        self,
        prompt: str,
        *,
        output: str | Path | None = None,
        timeout: float = 3600.0,
        on_update: Callable[[Task], None] | None = None,
        **options: Any,
    ) -> bytes:
        """Create a task, follow it to its end and return its (first) image's bytes, also
        saved to `output` when given. `options` are create()'s. Raises TaskFailed when the
        task fails or is cancelled, TimeoutError after `timeout` seconds."""
        task = self.create(prompt, **options)
        if on_update:
            on_update(task)
        task = self.wait(task.id, timeout=timeout, on_update=on_update)
        if task.status != "completed" or not task.results:
            raise TaskFailed(task)
        return self.download(task.results[0], output)


def _save(target: Path, content: bytes) -> None:
    """Write through a temporary name, so a failure never leaves half an image."""
    partial = target.with_name(target.name + ".part")
    partial.write_bytes(content)
    partial.replace(target)
