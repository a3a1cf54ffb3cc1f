"""The result URLs a completed task shows: presigned links straight to the object store,
or the API's own HMAC-signed `/files/...` URLs."""

from __future__ import annotations

import math
import time

from kreaserve.config import Settings
from kreaserve.storage import signing
from kreaserve.storage.base import Storage


class ResultLinks:
    """Turns a task's storage keys and expiry into the URLs of its answer.

    With `direct` and a store that presigns (S3), each link goes to the store and ends at
    the expiry; otherwise it goes to `/files/...` on `base_url`, which serves the local
    file, or redirects to a presigned link of a few minutes."""

    def __init__(
        self, storage: Storage, base_url: str, url_secret: bytes, direct: bool = True
    ) -> None:
        self.storage, self.base_url, self.url_secret = storage, base_url, url_secret
        self.direct = direct

    @classmethod
    def for_settings(cls, settings: Settings, storage: Storage, url_secret: bytes) -> ResultLinks:
        return cls(storage, settings.base_url, url_secret, direct=settings.s3_links == "direct")

    def urls(self, keys: list[str], expires_at: float) -> list[str]:
        expires = math.floor(expires_at)
        if self.direct and expires > time.time():
            links = [self.storage.presigned_url(key, expires) for key in keys]
            if all(link is not None for link in links):
                return [link for link in links if link is not None]
        return [signing.signed_url(self.base_url, self.url_secret, key, expires) for key in keys]
