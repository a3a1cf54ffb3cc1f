"""A real S3 server for tests: moto in server mode, a separate process on a free port,
ended by its PID.

    with moto_server(tmp_path) as s3:
        s3.client().create_bucket(Bucket="results")
        ... # KREASERVE_S3_ENDPOINT_URL=s3.url, credentials s3.env

With `auth=True` moto checks access keys and signatures (IAM); the first three requests
are free, and `moto_server` spends them creating a user with full rights, so `s3.env`
holds a key that works and any other key is refused (moto's presigned GETs fail in this
mode, so only the credential tests use it).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

__all__ = ["MotoServer", "moto_server"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class MotoServer:
    url: str
    popen: subprocess.Popen
    log: Path
    access_key: str = "testing"
    secret_key: str = "testing"
    region: str = "us-east-1"
    created: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        """The environment a kreaserve process needs to use this server."""
        return {
            "KREASERVE_S3_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self, **overrides: Any) -> Any:
        import boto3
        from botocore.config import Config

        options = {
            "endpoint_url": self.url,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": self.region,
            "config": Config(signature_version="s3v4"),
            **overrides,
        }
        return boto3.client("s3", **options)

    def new_bucket(self, name: str | None = None) -> str:
        """A fresh empty bucket (unique name per call)."""
        name = name or f"kreaserve-test-{os.urandom(4).hex()}"
        self.client().create_bucket(Bucket=name)
        self.created.append(name)
        return name

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)


def _start(log: Path, env: dict[str, str]) -> MotoServer:
    for _ in range(5):  # another process may take the free port before moto binds it
        port = _free_port()
        with log.open("ab") as handle:
            popen = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                env={**os.environ, **env},
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and popen.poll() is None:
            try:
                httpx.get(f"{url}/moto-api/", timeout=2)
                return MotoServer(url=url, popen=popen, log=log)
            except httpx.HTTPError:
                time.sleep(0.1)
        popen.kill()
        popen.wait(10)
    raise RuntimeError(f"moto server did not start:\n{log.read_text(errors='replace')}")


@contextlib.contextmanager
def moto_server(tmp: Path, *, auth: bool = False) -> Iterator[MotoServer]:
    """A moto S3 server; with `auth`, one that checks credentials (see the module doc)."""
    tmp.mkdir(parents=True, exist_ok=True)
    env = {"INITIAL_NO_AUTH_ACTION_COUNT": "3"} if auth else {}
    server = _start(tmp / f"moto-{'auth' if auth else 'open'}.log", env)
    try:
        if auth:
            import boto3

            iam = boto3.client(
                "iam",
                endpoint_url=server.url,
                region_name=server.region,
                aws_access_key_id="bootstrap",
                aws_secret_access_key="x",
            )
            iam.create_user(UserName="kreaserve")
            iam.put_user_policy(
                UserName="kreaserve",
                PolicyName="all",
                PolicyDocument=json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
                    }
                ),
            )
            key = iam.create_access_key(UserName="kreaserve")["AccessKey"]
            server.access_key, server.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
        yield server
    finally:
        server.stop()
