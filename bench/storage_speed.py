"""What S3 storage costs against the local folder, on the two paths it touches: storing a
result (the worker, once per image) and making a completed task's link (the API, on every
poll of a completed task and in its callback).

The S3 side is a real S3 server on this machine (moto in server mode, over HTTP), so the
store figures are the client's and HTTP's cost, not a network's or AWS's. The baseline is
LocalStorage (temp file, fsync, rename) and the HMAC-signed /files URL.

    .venv/bin/python bench/storage_speed.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kreaserve.storage import LocalStorage, ResultLinks, result_key  # noqa: E402
from kreaserve.storage.s3 import S3Storage  # noqa: E402
from tests.s3util import moto_server  # noqa: E402

#: A 1K tiny-random result is uniform noise: about 3.1 MB of PNG.
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(3_100_000)


def timed(action, repeats: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Median and p95 in milliseconds."""
    times = []
    for index in range(repeats):
        clock = time.perf_counter()
        action(index)
        times.append((time.perf_counter() - clock) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, moto_server(Path(tmp) / "s3") as s3:
        bucket = s3.new_bucket()
        s3_store = S3Storage(
            bucket,
            endpoint_url=s3.url,
            region=s3.region,
            access_key_id=s3.access_key,
            secret_access_key=s3.secret_key,
        )
        local = LocalStorage(Path(tmp) / "images")
        key = result_key("task-unified-1-abcdefgh", 1)
        expires = int(time.time()) + 86400
        rows = [
            (
                "store a 3.1 MB PNG",
                "local folder",
                timed(lambda i: local.put(result_key(f"task-{i}", 1), PNG), args.repeats),
            ),
            (
                "store a 3.1 MB PNG",
                "S3 (moto server)",
                timed(lambda i: s3_store.put(result_key(f"task-{i}", 1), PNG), args.repeats),
            ),
            (
                "one result link",
                "HMAC /files URL",
                timed(
                    lambda i: ResultLinks(local, "http://x", b"k").urls([key], expires),
                    args.repeats * 100,
                ),
            ),
            (
                "one result link",
                "S3 presigned GET",
                timed(
                    lambda i: ResultLinks(s3_store, "http://x", b"k").urls([key], expires),
                    args.repeats * 100,
                ),
            ),
        ]
    print("| operation | how | median | p95 |\n|---|---|---|---|")
    for operation, how, (median, p95) in rows:
        print(f"| {operation} | {how} | {median:.2f} ms | {p95:.2f} ms |")


if __name__ == "__main__":
    main()
