"""Time the moderation checks: the prompt check (as task creation runs it) and the image
check (as the worker runs it, on PNG bytes) at 1K and 2K.

Images are PNGs of uniform noise, what the tiny-random preset produces and the slowest
kind to decode; one is also timed as an already-decoded PIL image.

    .venv/bin/python bench/moderation_speed.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

from kreaserve.config import Settings
from kreaserve.moderation import ImageModerator, PromptModerator

EVAL = Path(__file__).resolve().parents[1] / "kreaserve/moderation/data/eval_prompts.jsonl"


def timed(fn, repeats: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    samples.sort()
    return statistics.median(samples) * 1000, samples[int(len(samples) * 0.95) - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    config = Settings().moderation_config()

    prompts = [json.loads(line)["prompt"] for line in EVAL.read_text().splitlines() if line]
    moderator = PromptModerator(config)
    moderator.warm()
    latencies = []
    for strict in (False, True):
        for prompt in prompts:
            moderator._semantic.clear_cache()  # time a prompt seen for the first time
            start = time.perf_counter()
            moderator.check(prompt, strict=strict)
            latencies.append((time.perf_counter() - start) * 1000)
    latencies.sort()
    rows = [
        f"| prompt check, {len(latencies)} checks of unseen prompts (both modes) | "
        f"{statistics.median(latencies):.2f} ms | "
        f"{latencies[int(len(latencies) * 0.95) - 1]:.2f} ms |"
    ]

    images = ImageModerator(config)
    rng = np.random.default_rng(7)
    for label, (w, h) in (("1K", (1024, 1024)), ("2K", (2048, 2048))):
        picture = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG", compress_level=1)
        png = buffer.getvalue()
        median, p95 = timed(lambda png=png: images.check(png), args.repeats)
        rows.append(
            f"| image check, {label} {w}×{h} PNG ({len(png) / 1e6:.1f} MB) | "
            f"{median:.1f} ms | {p95:.1f} ms |"
        )
        median, p95 = timed(lambda picture=picture: images.check(picture), args.repeats)
        rows.append(f"| image check, {label} decoded image | {median:.1f} ms | {p95:.1f} ms |")

    print(f"\n{date.today()} · {platform.machine()}, {os.cpu_count()} cores\n")
    print("| check | median | p95 |\n|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
