"""Time a task through the whole service against the same Krea2Pipeline call made directly.

One run, same machine, same weights (a preset, built offline):
  direct:  Krea2Pipeline.from_pretrained(...)(prompt, width, height, 8 steps, guidance 0,
           max_sequence_length 640, seeded generator), warm, wall time of the call alone;
  service: `kreaserve serve` (SQLite, embedded worker) on a free port; wall time from
           POST /v1/images/generations until the PNG is downloaded, polling every 50 ms.
The two never run at the same time. Prints a Markdown table for BENCHMARKS.md.

    .venv/bin/python bench/service_vs_direct.py [--weights tiny-random] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
CASES = [("1:1", "1K", 1024, 1024), ("1:1", "2K", 2048, 2048)]
PROMPT = "a red fox in snow, cinematic light"


def direct(weights: str, cache: Path, repeats: int) -> dict[str, list[float]]:
    """Seconds per call of the plain pipeline, after one warm-up call per size."""
    import torch
    from diffusers import Krea2Pipeline

    from kreaserve.engine.presets import ensure_preset

    path = ensure_preset(weights, cache) if weights.endswith("-random") else weights
    pipe = Krea2Pipeline.from_pretrained(str(path), dtype=torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    out: dict[str, list[float]] = {}
    for _size, quality, width, height in CASES:

        def call(seed: int, width: int = width, height: int = height) -> None:
            pipe(
                prompt=PROMPT,
                width=width,
                height=height,
                num_inference_steps=8,
                guidance_scale=0.0,
                max_sequence_length=640,
                generator=torch.Generator("cpu").manual_seed(seed),
            )

        call(0)
        times = []
        for seed in range(1, repeats + 1):
            start = time.perf_counter()
            call(seed)
            times.append(time.perf_counter() - start)
        out[quality] = times
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service(
    weights: str, cache: Path, repeats: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Client-observed seconds per task (and the engine's own seconds) through the service."""
    data = Path(tempfile.mkdtemp(prefix="kreaserve-bench-"))
    port = free_port()
    env = {
        **os.environ,
        "KREASERVE_DATA_DIR": str(data),
        "KREASERVE_CACHE_DIR": str(cache),
        "KREASERVE_PORT": str(port),
        "KREASERVE_WEIGHTS": weights,
    }
    cli = [sys.executable, "-m", "kreaserve.cli"]
    key = subprocess.run(
        [*cli, "keys", "create", "--name", "bench", "--credits", "1000"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    log = (data / "serve.log").open("wb")
    server = subprocess.Popen([*cli, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit((data / "serve.log").read_text())
            time.sleep(0.2)
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"})
        wall: dict[str, list[float]] = {}
        engine: dict[str, list[float]] = {}
        for size, quality, _w, _h in CASES:
            for seed in range(repeats + 1):  # the first one is a warm-up at this size
                start = time.perf_counter()
                task = client.post(
                    "/v1/images/generations",
                    json={
                        "model": "krea-2-turbo",
                        "prompt": PROMPT,
                        "size": size,
                        "quality": quality,
                        "seed": seed + 1,
                    },
                ).json()
                while (body := client.get(f"/v1/tasks/{task['id']}").json())["status"] in (
                    "pending",
                    "processing",
                ):
                    time.sleep(0.05)
                assert body["status"] == "completed", body
                image = httpx.get(body["results"][0])
                assert image.status_code == 200
                elapsed = time.perf_counter() - start
                if seed:
                    wall.setdefault(quality, []).append(elapsed)
                    engine.setdefault(quality, []).append(_engine_seconds(data, task["id"]))
        return wall, engine
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def _engine_seconds(data: Path, task_id: str) -> float:
    import sqlite3

    with sqlite3.connect(data / "kreaserve.db") as conn:
        return conn.execute("SELECT engine_seconds FROM tasks WHERE id = ?", (task_id,)).fetchone()[
            0
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="tiny-random")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "kreaserve")
    args = parser.parse_args()

    direct_times = direct(args.weights, args.cache_dir, args.repeats)
    wall, engine = service(args.weights, args.cache_dir, args.repeats)

    med = statistics.median
    print(
        f"\n{date.today()} · {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores · weights {args.weights} · bf16 · 8 steps · "
        f"median of {args.repeats} warm runs\n"
    )
    print(
        "| tier | pixels | direct Krea2Pipeline call | engine time in service "
        "| service round trip (POST → PNG downloaded) | overhead |"
    )
    print("|---|---|---|---|---|---|")
    for _size, quality, width, height in CASES:
        d, e, w = med(direct_times[quality]), med(engine[quality]), med(wall[quality])
        print(
            f"| {quality} | {width}×{height} | {d:.2f} s | {e:.2f} s | {w:.2f} s "
            f"| +{w - d:.2f} s ({(w / d - 1) * 100:+.0f} %) |"
        )
    print("\nraw:", {"direct": direct_times, "engine": engine, "service": wall})


if __name__ == "__main__":
    main()
