"""HMAC-signed, expiring result URLs: `/files/<key>?expires=<unix>&signature=<hex>`."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlencode

FILES_PREFIX = "/files/"


def signature(secret: bytes, key: str, expires: int) -> str:
    """The hex HMAC-SHA256 over the key and its expiry."""
    return hmac.new(secret, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()


def signed_url(base_url: str, secret: bytes, key: str, expires: int) -> str:
    """An absolute URL that serves `key` until `expires` (Unix seconds)."""
    query = urlencode({"expires": expires, "signature": signature(secret, key, expires)})
    return f"{base_url}{FILES_PREFIX}{key}?{query}"


def verify(secret: bytes, key: str, expires: int, given: str) -> bool:
    """Whether `given` is the signature of this key and expiry (constant time)."""
    return hmac.compare_digest(signature(secret, key, expires), given)
