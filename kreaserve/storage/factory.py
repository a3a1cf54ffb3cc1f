"""Build the configured store: the local folder (the default) or an S3 bucket."""

from __future__ import annotations

from kreaserve.config import Settings
from kreaserve.storage.base import Storage
from kreaserve.storage.local import LocalStorage


def open_storage(settings: Settings) -> Storage:
    """S3 when KREASERVE_S3_BUCKET is set, else `<data_dir>/images`. Nothing is checked
    here; `Storage.check()` probes the store."""
    if not settings.s3_bucket:
        return LocalStorage(settings.images_dir)
    from kreaserve.storage.s3 import S3Storage  # boto3 only when S3 is used

    return S3Storage(
        settings.s3_bucket,
        prefix=settings.s3_prefix,
        endpoint_url=settings.s3_endpoint_url,
        public_endpoint_url=settings.s3_public_endpoint_url,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=settings.s3_secret_access_key,
        addressing_style=settings.s3_addressing_style,
    )
