"""A small synchronous client over httpx: create, get, wait, cancel, download."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

TERMINAL = {"completed", "failed", "cancelled"}


class KreaserveError(Exception):
    """An error answer of the API, in the contract's error shape."""

    def __init__(self, status: int, code: str, message: str, type_: str = "",
                 param: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.type, self.param = (
            status, code, message, type_, param)


class Client:
    """Talks to one kreaserve (or hosted krea-2-turbo) base URL with one API key."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout,
                                  headers={"Authorization": f"Bearer {api_key}"},
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._http.request(method, path, **kwargs)
        if response.is_success:
            return response.json()
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            raise KreaserveError(response.status_code, "http_error", response.text[:200]) from None
        raise KreaserveError(response.status_code, error.get("code", ""), error.get("message", ""),
                             error.get("type", ""), error.get("param"))

    def generate(self, prompt: str, *, size: str = "1:1", quality: str = "1K",
                 seed: int | None = None, nsfw_check: bool = False,
                 callback_url: str | None = None, model: str = "krea-2-turbo") -> dict[str, Any]:
        """Create a task; returns the task object (status pending)."""
        body: dict[str, Any] = {"model": model, "prompt": prompt, "size": size,
                                "quality": quality, "nsfw_check": nsfw_check}
        if seed is not None:
            body["seed"] = seed
        if callback_url is not None:
            body["callback_url"] = callback_url
        return self._call("POST", "/v1/images/generations", json=body)

    def get(self, task_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/tasks/{task_id}")

    def cancel(self, task_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/tasks/{task_id}/cancel")

    def credits(self) -> dict[str, Any]:
        return self._call("GET", "/v1/credits")

    def wait(self, task_id: str, *, poll: float = 0.5, timeout: float = 3600.0,
             on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll until the task ends; `on_update` sees every answer."""
        deadline = time.monotonic() + timeout
        while True:
            task = self.get(task_id)
            if on_update:
                on_update(task)
            if task["status"] in TERMINAL:
                return task
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {task_id} did not end within {timeout} s")
            time.sleep(poll)

    def download(self, url: str, path: str | Path) -> Path:
        """Save a result URL to a file (written whole or not at all)."""
        target = Path(path)
        with httpx.stream("GET", url, timeout=self._http.timeout) as response:
            if not response.is_success:
                response.read()
                raise KreaserveError(response.status_code, "download_failed", response.text[:200])
            partial = target.with_name(target.name + ".part")
            with partial.open("wb") as handle:
                for chunk in response.iter_bytes():
                    handle.write(chunk)
        partial.replace(target)
        return target
