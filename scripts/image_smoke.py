"""Smoke test run INSIDE a built image by scripts/build-image: `kreaserve serve` on
tiny-random answers /healthz and completes one task whose result downloads as a PNG.

Standard library plus the image's own httpx; exits non-zero with a reason on failure."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import httpx
from PIL import Image


def main() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = tempfile.mkdtemp(prefix="smoke-")
    env = {
        **os.environ,
        "KREASERVE_DATA_DIR": data,
        "KREASERVE_WEIGHTS": "tiny-random",
        "KREASERVE_HOST": "127.0.0.1",
        "KREASERVE_PORT": str(port),
    }
    made = subprocess.run(
        ["kreaserve", "keys", "create", "--name", "smoke", "--credits", "1", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = json.loads(made.stdout)["key"]
    server = subprocess.Popen(["kreaserve", "serve"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        for path in ("/healthz", "/readyz"):
            while True:
                if server.poll() is not None:
                    print(f"smoke: serve exited with {server.returncode}", file=sys.stderr)
                    return 1
                try:
                    if httpx.get(url + path, timeout=2).status_code == 200:
                        print(f"smoke: {path} answers 200", flush=True)
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    print(f"smoke: {path} not 200 in time", file=sys.stderr)
                    return 1
                time.sleep(0.5)
        auth = {"Authorization": f"Bearer {key}"}
        task = httpx.post(
            f"{url}/v1/images/generations",
            headers=auth,
            timeout=30,
            json={"model": "krea-2-turbo", "prompt": "a fox", "size": "4:3"},
        ).json()
        while task["status"] not in ("completed", "failed", "cancelled"):
            time.sleep(0.5)
            task = httpx.get(f"{url}/v1/tasks/{task['id']}", headers=auth, timeout=30).json()
        if task["status"] != "completed":
            print(f"smoke: task ended {task['status']}: {task.get('error')}", file=sys.stderr)
            return 1
        image = Image.open(io.BytesIO(httpx.get(task["results"][0], timeout=30).content))
        if image.size != (1152, 896):
            print(f"smoke: result is {image.size}, not 1152x896", file=sys.stderr)
            return 1
        print(f"smoke: task {task['id']} completed, PNG {image.size[0]}x{image.size[1]}")
        return 0
    finally:
        server.terminate()
        server.wait(60)


if __name__ == "__main__":
    sys.exit(main())
