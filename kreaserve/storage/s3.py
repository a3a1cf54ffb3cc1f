"""Result images in an S3-compatible bucket (AWS S3, MinIO, R2, B2...), through boto3.

Every process of a fleet reads and writes the same bucket, so no process needs another's
disk. Links are presigned GETs that end exactly when the result expires; the sweep
deletes expired objects, and a bucket lifecycle rule (where the store has them) deletes
what the sweep never saw.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from kreaserve import images
from kreaserve.storage.base import StorageError

log = logging.getLogger("kreaserve.storage")

#: SigV4 presigned URLs live at most seven days.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
#: The id of our bucket lifecycle rule; other rules on the bucket are kept.
LIFECYCLE_RULE_ID = "kreaserve-expired-results"
CREDENTIALS_HINT = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
    "KREASERVE_S3_ACCESS_KEY_ID and KREASERVE_S3_SECRET_ACCESS_KEY)"
)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class S3Storage:
    """Objects named `<prefix><key>` in one bucket; a boto3 client shared by all threads
    (boto3 clients are thread-safe)."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "results/",
        endpoint_url: str | None = None,
        public_endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        addressing_style: str = "auto",
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_attempts: int = 3,
    ) -> None:
        self.bucket, self.prefix = bucket, prefix
        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
        )
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": addressing_style},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "max_attempts": max_attempts},
        )
        self.client: Any = session.client("s3", endpoint_url=endpoint_url, config=config)
        self.endpoint = self.client.meta.endpoint_url
        # Presigning is local arithmetic, but the host is signed: links for clients that
        # reach the store elsewhere are signed by a client of that endpoint.
        self.link_client: Any = (
            self.client
            if not public_endpoint_url
            else session.client("s3", endpoint_url=public_endpoint_url, config=config)
        )

    def _name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def _unavailable(self, action: str, exc: BaseException) -> StorageError:
        return StorageError(
            f"S3 {action} failed on bucket {self.bucket!r} at {self.endpoint}: {_first_line(exc)}"
        )

    def put(self, key: str, data: bytes) -> None:
        """One PUT with the body's MD5: the store keeps the whole object or none of it
        (a body cut short is refused, never stored)."""
        digest = base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324 - integrity
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._name(key),
                Body=data,
                ContentType=images.media_type_of(key),
                ContentMD5=digest,
            )
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable("upload", exc) from exc

    def path(self, key: str) -> Path | None:
        return None  # never on this machine's disk

    def presigned_url(self, key: str, expires_at: int) -> str | None:
        """A GET link that stops working at `expires_at`, or None once that has passed.

        The signature's start (X-Amz-Date) is the signing second, so its lifetime is
        counted from the next whole second: the link may end up to a second early, never
        late."""
        lifetime = expires_at - math.ceil(time.time())
        if lifetime <= 0:
            return None
        return self.link_client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self._name(key)},
            ExpiresIn=min(lifetime, MAX_PRESIGN_SECONDS),
        )

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._name(key))
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable("delete", exc) from exc

    def exists(self, key: str) -> bool:
        """Whether the object is there (a HEAD); for tests and tools."""
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise self._unavailable("head", exc) from exc
        except BotoCoreError as exc:
            raise self._unavailable("head", exc) from exc
        return True

    def check(self) -> None:
        """HEAD the bucket; a missing bucket, refused credentials or an unreachable
        endpoint each raise StorageError with one line that says what to fix."""
        where = f"S3 bucket {self.bucket!r} at {self.endpoint}"
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except NoCredentialsError:
            raise StorageError(f"no S3 credentials for {where}: {CREDENTIALS_HINT}") from None
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = exc.response.get("Error", {}).get("Code", "")
            if status == 404 or code == "NoSuchBucket":
                raise StorageError(
                    f"{where} does not exist: create it, or set "
                    f"KREASERVE_S3_BUCKET to an existing bucket"
                ) from None
            if status in (400, 401, 403):
                raise StorageError(
                    f"{where} refused our credentials (HTTP {status}): "
                    f"{CREDENTIALS_HINT} to a key that may read and write "
                    f"it"
                ) from None
            raise StorageError(f"{where} answered HTTP {status} {code}") from None
        except BotoCoreError as exc:
            raise StorageError(
                f"cannot reach the S3 endpoint {self.endpoint} "
                f"({_first_line(exc)}): check KREASERVE_S3_ENDPOINT_URL and "
                f"the network"
            ) from None

    def ensure_lifecycle(self, ttl_seconds: float) -> bool:
        """Add (or update) our rule expiring objects under the prefix a day after the
        results expire, keeping the bucket's other rules. False, with a warning, where
        the store has no lifecycle rules or we may not set them: the sweep then deletes
        every expired object alone."""
        if not self.prefix:
            log.warning(
                "no bucket lifecycle rule without KREASERVE_S3_PREFIX (it would "
                "cover the whole bucket); the sweep deletes expired results"
            )
            return False
        days = math.ceil(ttl_seconds / 86400) + 1  # lifecycle counts whole days
        rule = {
            "ID": LIFECYCLE_RULE_ID,
            "Filter": {"Prefix": self.prefix},
            "Status": "Enabled",
            "Expiration": {"Days": days},
        }
        try:
            try:
                rules = self.client.get_bucket_lifecycle_configuration(Bucket=self.bucket)["Rules"]
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "NoSuchLifecycleConfiguration":
                    raise
                rules = []
            if rule in rules:
                return True
            others = [item for item in rules if item.get("ID") != LIFECYCLE_RULE_ID]
            self.client.put_bucket_lifecycle_configuration(
                Bucket=self.bucket, LifecycleConfiguration={"Rules": [*others, rule]}
            )
        except (BotoCoreError, ClientError) as exc:
            log.warning(
                "could not set the bucket lifecycle rule (%s); the sweep deletes expired results",
                _first_line(exc),
            )
            return False
        log.info(
            "bucket lifecycle rule %s: objects under %r expire after %d days",
            LIFECYCLE_RULE_ID,
            self.prefix,
            days,
        )
        return True
