"""Size and encode time of a result image per output format (png, jpeg, webp), at 1K and 2K.

Two kinds of image: `noise` (random pixels, what the `tiny-random` preset's random weights
make: it compresses badly, a worst case) and `smooth` (a gradient with a few shapes, closer
to a real picture). Each encode uses `kreaserve.images.encode`, the function the engine
child runs, with the default quality.

`stall ms` says where encoding may run: the longest a Python thread of the same process
(the stand-in for the denoising thread, which launches the device's kernels from Python)
had to wait while another thread encoded (median of 3 one-second windows; the first line
gives the same without an encoder, the machine's own noise). A few ms: the encoder releases the
GIL, so encoding in the engine child's finisher thread does not hold up the next batch's
denoising; the whole encode time: it holds the GIL throughout. `raw-send` is what the
alternative (encoding in the worker) would cost instead: the raw RGB pixels through a pipe
to another process.

    .venv/bin/python bench/output_formats.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import threading
import time
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from kreaserve import images


def noise_image(side: int) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), "RGB")


def smooth_image(side: int) -> Image.Image:
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    pixels = np.empty((side, side, 3), dtype=np.uint8)
    pixels[..., 0] = ramp[None, :]
    pixels[..., 1] = ramp[:, None]
    pixels[..., 2] = 255 - (ramp[None, :] + ramp[:, None]) / 2
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    s = side // 16
    draw.ellipse((2 * s, 2 * s, 7 * s, 7 * s), fill=(240, 200, 40))
    draw.rectangle((9 * s, 3 * s, 14 * s, 9 * s), fill=(30, 60, 160))
    draw.polygon([(3 * s, 14 * s), (8 * s, 9 * s), (13 * s, 14 * s)], fill=(20, 140, 60))
    return image


def worst_wait(seconds: float) -> float:
    """The longest this thread, waking every 1 ms, waited beyond its 1 ms (seconds)."""
    worst, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        time.sleep(0.001)
        worst = max(worst, time.perf_counter() - start - 0.001)
    return worst


def stall_ms(image: Image.Image | None, fmt: str, windows: int = 3) -> float:
    """The median over `windows` 1-second windows of the longest a thread waking every 1 ms
    waited beyond its 1 ms, in ms, while another thread of the process encodes (none when
    `image` is None: the machine's own scheduling noise). An encoder that held the GIL would
    make it wait a whole encode."""
    if image is None:
        return 1000 * statistics.median(worst_wait(1.0) for _ in range(windows))
    done = threading.Event()

    def encode_until_done() -> None:
        while not done.is_set():
            images.encode(image, fmt)

    encoder = threading.Thread(target=encode_until_done)
    encoder.start()
    try:
        return 1000 * statistics.median(worst_wait(1.0) for _ in range(windows))
    finally:
        done.set()
        encoder.join()


def _drain(conn: Any) -> None:
    while conn.recv_bytes():
        conn.send_bytes(b"ok")


def raw_send_ms(image: Image.Image, repeat: int) -> float:
    """Median ms to send the image's raw RGB bytes to another process (and hear back)."""
    parent, child = mp.Pipe()
    reader = mp.get_context("spawn").Process(target=_drain, args=(child,), daemon=True)
    reader.start()
    raw = image.tobytes()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        parent.send_bytes(raw)
        parent.recv_bytes()
        times.append(time.perf_counter() - start)
    parent.send_bytes(b"")
    reader.join()
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(
        f"{'image':<7}{'side':>6}{'format':>8}{'KiB':>9}{'encode ms':>11}"
        f"{'stall ms':>15}{'raw-send ms':>13}"
    )
    print(f"no encoder (the machine's noise): stall {stall_ms(None, ''):.1f} ms")
    for kind, make in (("noise", noise_image), ("smooth", smooth_image)):
        for side in (1024, 2048):
            image = make(side)
            send = raw_send_ms(image, args.repeat)
            for fmt in images.FORMATS:
                data = images.encode(image, fmt)
                times = []
                for _ in range(args.repeat):
                    start = time.perf_counter()
                    images.encode(image, fmt)
                    times.append(time.perf_counter() - start)
                print(
                    f"{kind:<7}{side:>6}{fmt:>8}{len(data) / 1024:>9.0f}"
                    f"{1000 * statistics.median(times):>11.1f}"
                    f"{stall_ms(image, fmt):>15.1f}{send:>13.1f}"
                )


if __name__ == "__main__":
    main()
