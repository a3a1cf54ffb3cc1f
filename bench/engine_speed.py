"""Seconds per image: the plain Krea2Pipeline call against the kreaserve engine, one run.

For each size (1K = 1024x1024, 2K = 2048x2048) and batch size (1, 2, 4):
  baseline:  `Krea2Pipeline.__call__` in bf16, what a user would run instead: a list of
             prompts, one seeded generator per image, 8 steps, guidance 0, text length 645
             (the contract's 640 prompt tokens), PIL output. `--runs` consecutive calls.
  kreaserve: the same images through `Engine` with the chosen speed-ups, run the way the
             engine child runs them: the next batch denoises while a second thread decodes
             the previous one (`--runs` consecutive batches).
Seconds per image = wall time of the runs / images made, after one warm-up of each at that
size; the share of it spent encoding text and denoising (before decoding) is shown too.
Fidelity: PSNR of every kreaserve image against the baseline image of the same prompt
and seed (inf = identical pixels), and the largest pixel difference.

Both sides use one loaded pipeline. When the speed-ups leave it as it is (trimming, decode
overlap), baseline and kreaserve alternate case by case, so drift in the machine's speed
during a long run hits both alike. FP8, compilation, another attention kernel and forced VAE
tiling change it in place (two full-size copies would not fit one GPU): then every baseline
case runs first. The printed header says which order ran.

CPU (here):   .venv/bin/python bench/engine_speed.py --weights mid-random
GPU (H100):   python bench/engine_speed.py --full-size --device cuda [--fp8 --compile
              --attention-backend _native_cudnn]  (random full-size weights, built on the GPU;
              see BENCHMARKS.md for the device command and the wheels it carries)
"""

from __future__ import annotations

import argparse
import platform
import sys
import threading
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kreaserve.engine.options import EngineOptions  # noqa: E402

SIZES = {"1K": (1024, 1024), "2K": (2048, 2048)}
PROMPTS = [
    "a red fox in fresh snow, low winter sun, shallow depth of field",
    "an isometric cutaway of a tiny bakery at dawn, warm light",
    "a lighthouse on black rocks under a storm, long exposure",
    "macro photo of a dew drop on a fern, bokeh",
]


@dataclass
class Case:
    tier: str
    batch: int
    baseline_s: float = 0.0
    kreaserve_s: float = 0.0
    baseline_denoise_s: float = 0.0
    kreaserve_denoise_s: float = 0.0
    psnr_min: float = 0.0
    max_diff: int = 0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def batches(batch: int, runs: int) -> list[list[tuple[str, int]]]:
    """`runs` batches of (prompt, seed), distinct for every image."""
    return [
        [(PROMPTS[(r * batch + i) % len(PROMPTS)], 1000 + r * batch + i) for i in range(batch)]
        for r in range(runs)
    ]


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_baseline(pipe, device: str, width: int, height: int, work) -> tuple[float, float, list]:  # type: ignore[no-untyped-def]
    """Wall time, the part of it spent before decoding (text encoding and the 8 steps, timed
    at the end of the last step), and the images."""
    import torch

    from kreaserve.engine.pipeline import MAX_SEQUENCE_LENGTH

    steps = 8
    images = []
    began: list[float] = []
    ended: list[float] = []

    def last_step(_pipe, step, _t, _kwargs):  # type: ignore[no-untyped-def]
        if step == steps - 1:
            sync(device)
            ended.append(time.perf_counter())
        return {}

    sync(device)
    start = time.perf_counter()
    for batch in work:
        began.append(time.perf_counter())
        out = pipe(
            prompt=[p for p, _ in batch],
            width=width,
            height=height,
            num_inference_steps=steps,
            guidance_scale=0.0,
            generator=[torch.Generator(device).manual_seed(s) for _, s in batch],
            max_sequence_length=MAX_SEQUENCE_LENGTH,
            output_type="pil",
            callback_on_step_end=last_step,
        )
        images += out.images
    denoise = sum(e - b for b, e in zip(began, ended, strict=True))
    sync(device)
    return time.perf_counter() - start, denoise, images


def run_kreaserve(engine, device: str, width: int, height: int, work) -> tuple[float, float, list]:  # type: ignore[no-untyped-def]
    """As the engine child runs batches: with overlap (CUDA by default) a finisher thread
    decodes batch k while batch k+1 denoises; without, each batch is decoded in turn.
    Returns wall time, the time spent in `Engine.denoise` (encoding and steps), the images."""
    import queue

    from kreaserve.engine.pipeline import GenerateRequest

    images: dict[int, object] = {}
    pending: queue.Queue = queue.Queue(maxsize=1)

    def finish() -> None:
        while (item := pending.get()) is not None:
            offset, denoised = item
            for index in denoised.live:
                images[offset + index] = engine.decode(denoised, index)

    overlap = engine.options.overlaps(device)
    finisher = threading.Thread(target=finish)
    sync(device)
    start = time.perf_counter()
    if overlap:
        finisher.start()
    offset = 0
    denoise = 0.0
    for batch in work:
        requests = [GenerateRequest(prompt=p, width=width, height=height, seed=s) for p, s in batch]
        began = time.perf_counter()
        denoised = engine.denoise(requests)
        if denoised.ready is not None:  # this batch's steps only: a device-wide sync would
            denoised.ready.synchronize()  # also wait for the previous batch's overlapped decode
        denoise += time.perf_counter() - began
        if overlap:
            pending.put((offset, denoised))
        else:
            for index in denoised.live:
                images[offset + index] = engine.decode(denoised, index)
        offset += len(batch)
    if overlap:
        pending.put(None)
        finisher.join()
    sync(device)
    return time.perf_counter() - start, denoise, [images[i] for i in range(offset)]


def changes_pipeline(options: EngineOptions) -> bool:
    """Whether applying `options` alters the loaded pipeline, so the baseline must run first."""
    return bool(
        options.fp8 or options.compile or options.attention_backend or options.vae_tiling == "on"
    )


def hardware(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {torch.get_num_threads()} threads"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--weights",
        default="mid-random",
        help="a preset or a Krea2Pipeline directory (ignored with --full-size)",
    )
    parser.add_argument(
        "--full-size",
        action="store_true",
        help="the full-size architecture with random weights (GPU)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bf16")
    parser.add_argument("--sizes", default="1K,2K")
    parser.add_argument("--batches", default="1,2,4")
    parser.add_argument("--runs", type=int, default=2, help="consecutive batches per case")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "kreaserve")
    parser.add_argument("--no-trim", action="store_true", help="keep the padded text")
    parser.add_argument("--attention-backend", default=None)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--cuda-graphs", action="store_true")
    parser.add_argument("--fp8", action="store_true")
    parser.add_argument("--vae-tiling", default="auto", choices=["auto", "on", "off"])
    parser.add_argument("--overlap", default="auto", choices=["auto", "on", "off"])
    args = parser.parse_args()

    import torch

    from kreaserve.engine import speedups
    from kreaserve.engine.pipeline import Engine, resolve_weights
    from kreaserve.engine.weights import to_torch_dtype

    options = EngineOptions(
        trim_padding=not args.no_trim,
        attention_backend=args.attention_backend,
        compile=args.compile,
        cuda_graphs=args.cuda_graphs,
        fp8=args.fp8,
        vae_tiling=args.vae_tiling,
        overlap=args.overlap,
    )
    dtype = to_torch_dtype(args.dtype)
    loaded = time.perf_counter()
    if args.full_size:
        from bench.full_size import build_full_size_pipeline

        pipe = build_full_size_pipeline(args.device, dtype)
        weights = resolve_weights("tiny-random", cuda_available=False)  # label only: random
        label = "full-size architecture, random weights"
    else:
        plain = Engine.load(
            args.weights, cache_dir=args.cache_dir, device=args.device, dtype=args.dtype
        )
        pipe, weights, label = plain.pipe, plain._weights, args.weights
    print(f"# loaded {label} in {time.perf_counter() - loaded:.1f} s", flush=True)

    tiers = [t.strip() for t in args.sizes.split(",") if t.strip()]
    sizes = [int(b) for b in args.batches.split(",")]
    cases = [Case(tier, batch) for tier in tiers for batch in sizes]
    baseline_images: dict[tuple[str, int], list] = {}
    warm: dict[str, set[str]] = {"baseline": set(), "kreaserve": set()}

    def measure_baseline(case: Case) -> None:
        width, height = SIZES[case.tier]
        if case.tier not in warm["baseline"]:  # one warm-up per size
            run_baseline(pipe, args.device, width, height, batches(1, 1))
            warm["baseline"].add(case.tier)
        seconds, denoise, images = run_baseline(
            pipe, args.device, width, height, batches(case.batch, args.runs)
        )
        case.baseline_s = seconds / len(images)
        case.baseline_denoise_s = denoise / len(images)
        baseline_images[(case.tier, case.batch)] = images
        print(
            f"baseline  {case.tier} batch {case.batch}: {case.baseline_s:.3f} s/image", flush=True
        )

    def measure_kreaserve(engine: Engine, case: Case) -> None:
        width, height = SIZES[case.tier]
        # One warm-up per size; compiled, one per case too (a batch has its own graphs).
        if case.tier not in warm["kreaserve"]:
            run_kreaserve(engine, args.device, width, height, batches(1, 1))
            warm["kreaserve"].add(case.tier)
        if options.compile and case.batch > 1:
            run_kreaserve(engine, args.device, width, height, batches(case.batch, 1))
        seconds, denoise, images = run_kreaserve(
            engine, args.device, width, height, batches(case.batch, args.runs)
        )
        case.kreaserve_s = seconds / len(images)
        case.kreaserve_denoise_s = denoise / len(images)
        pairs = [
            (np.asarray(a), np.asarray(b))
            for a, b in zip(baseline_images[(case.tier, case.batch)], images, strict=True)
        ]
        case.psnr_min = min(psnr(a, b) for a, b in pairs)
        case.max_diff = max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in pairs)
        print(
            f"kreaserve {case.tier} batch {case.batch}: {case.kreaserve_s:.3f} s/image", flush=True
        )

    def engine_with_speedups() -> Engine:
        speedups.apply(pipe, options, args.device)
        return Engine(
            pipe, weights=weights, device=args.device, dtype=dtype, source=label, options=options
        )

    if changes_pipeline(options):
        # FP8, compilation, another attention kernel or forced tiling change the pipeline in
        # place (two full-size copies would not fit one GPU): every baseline case first.
        order = "every baseline case, then the speed-ups applied and every kreaserve case"
        for case in cases:
            measure_baseline(case)
        engine = engine_with_speedups()
        for case in cases:
            measure_kreaserve(engine, case)
    else:
        # Same pipeline object for both: alternate per case, so a machine that speeds up or
        # slows down during a long run affects both sides of every row alike.
        order = "baseline and kreaserve alternating per case"
        engine = engine_with_speedups()
        for case in cases:
            measure_baseline(case)
            measure_kreaserve(engine, case)

    print(
        f"\n{date.today()} · {hardware(args.device)} · {platform.machine()} · torch "
        f"{torch.__version__} · {label} · {args.dtype} · speed-ups: "
        f"{', '.join(options.describe()) or 'none'} · {args.runs} batches per case · {order}\n"
    )
    print(
        "| size | batch | baseline s/image | kreaserve s/image | speed-up | "
        "of which encode + steps (baseline / kreaserve) | min PSNR vs baseline | "
        "max pixel diff |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for case in cases:
        print(
            f"| {case.tier} | {case.batch} | {case.baseline_s:.3f} | {case.kreaserve_s:.3f} | "
            f"{case.baseline_s / case.kreaserve_s:.2f}x | {case.baseline_denoise_s:.3f} / "
            f"{case.kreaserve_denoise_s:.3f} | {case.psnr_min:.1f} dB | {case.max_diff} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
