"""Where result images live, and the signed URLs that hand them out."""

from kreaserve.storage.base import Storage
from kreaserve.storage.local import LocalStorage

__all__ = ["LocalStorage", "Storage"]
