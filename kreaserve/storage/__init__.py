"""Where result images live, and the signed URLs that hand them out."""

from kreaserve.storage.base import Storage, StorageError
from kreaserve.storage.factory import open_storage
from kreaserve.storage.keys import result_key
from kreaserve.storage.links import ResultLinks
from kreaserve.storage.local import LocalStorage

__all__ = ["LocalStorage", "ResultLinks", "Storage", "StorageError", "open_storage", "result_key"]
