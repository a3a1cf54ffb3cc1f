"""The Python client for kreaserve (and for any krea-2-turbo compatible API)."""

from kreaserve.client.sync import Client, KreaserveError

__all__ = ["Client", "KreaserveError"]
