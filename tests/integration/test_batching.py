"""Batching through the running service: same-size tasks claimed together and run as one
pipeline call, each image what its task gets alone; a cancel reaches one task of a batch;
several engines (one per GPU slot) under one worker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from kreaserve import contract
from tests.conftest import Server, start_server
from tests.integration.test_generation import fetch_image, wait_until_done

PROMPTS = [
    "a red fox in snow",
    "a lighthouse at dusk over black rocks, long exposure",
    "cat",
    "an isometric cutaway of a tiny bakery at dawn",
]


@pytest.fixture
def server(
    request: pytest.FixtureRequest, tmp_path: Path, weights_cache: Path
) -> Iterator[tuple[str, Server]]:
    mode = getattr(request, "param", "untrimmed")
    running = start_server(
        tmp_path,
        f"sqlite:///{tmp_path / 'batch.db'}",
        weights_cache,
        embedded_worker=True,
        extra_env={
            "KREASERVE_BATCH_SIZE": "4",
            "KREASERVE_BATCH_WAIT_MS": "1000",
            "KREASERVE_TRIM_PADDING": str(mode == "trimmed"),
        },
    )
    yield mode, running
    running.stop()


def pixels(url: str) -> np.ndarray:
    return np.asarray(fetch_image(url).convert("RGB")).astype(np.int16)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("server", ["untrimmed", "trimmed"], indirect=True)
def test_same_size_tasks_run_as_one_batch_and_match_their_solo_images(
    server: tuple[str, Server],
) -> None:
    mode, running = server
    with running.client(running.key(credits=20)) as client:
        bodies = [
            {"model": "krea-2-turbo", "prompt": p, "seed": 100 + i} for i, p in enumerate(PROMPTS)
        ]
        other = client.post(
            "/v1/images/generations",
            json={"model": "krea-2-turbo", "prompt": "wide", "size": "16:9", "seed": 5},
        ).json()
        tasks = [client.post("/v1/images/generations", json=b).json() for b in bodies]
        batched = [wait_until_done(client, t["id"])[-1] for t in tasks]
        assert wait_until_done(client, other["id"])[-1]["status"] == "completed"
        solo = []
        for body in bodies:  # one at a time: each runs in a batch of one
            task = client.post("/v1/images/generations", json=body).json()
            solo.append(wait_until_done(client, task["id"])[-1])
        credits = client.get("/v1/credits").json()
    log = running.api.output()
    assert "batch of 4" in log and "batch of 5" not in log  # the 16:9 task ran on its own
    assert all(t["status"] == "completed" for t in batched + solo)
    assert credits["reserved"] == 0 and credits["balance"] == round(20 - 9 * 0.45, 2)
    for together, alone in zip(batched, solo, strict=True):
        a, b = pixels(together["results"][0]), pixels(alone["results"][0])
        if mode == "untrimmed":
            assert np.array_equal(a, b)  # bit for bit
        else:
            # A trimmed batch of prompts of different lengths needs a key mask, a single
            # prompt does not: bf16 rounding differs, the image does not (see BENCHMARKS.md).
            assert psnr(a, b) > 40


@pytest.mark.timing
def test_cancelling_one_task_of_a_batch_leaves_the_others_to_finish(
    server: tuple[str, Server],
) -> None:
    _, running = server
    with running.client(running.key(credits=20)) as client:
        tasks = [
            client.post(
                "/v1/images/generations",
                json={"model": "krea-2-turbo", "prompt": p, "quality": "2K"},
            ).json()
            for p in PROMPTS[:3]
        ]
        victim = tasks[1]["id"]
        deadline = time.monotonic() + 120
        while client.get(f"/v1/tasks/{victim}").json()["progress"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert client.post(f"/v1/tasks/{victim}/cancel").status_code == 200
        cancelled_at = time.monotonic()
        final = wait_until_done(client, victim)[-1]
        ended_after = time.monotonic() - cancelled_at
        others = [wait_until_done(client, t["id"])[-1] for t in (tasks[0], tasks[2])]
        credits = client.get("/v1/credits").json()
    assert "batch of 3" in running.api.output()
    # The 2K images of the contract's table come out at its pixels (test_sizes: all at 1K).
    assert fetch_image(others[0]["results"][0]).size == contract.PIXELS[("1:1", "2K")]
    assert final["status"] == "cancelled", final
    assert ended_after < 10  # a 2K batch of 3 takes far longer: it left the batch at once
    assert [t["status"] for t in others] == ["completed", "completed"]
    assert credits["reserved"] == 0 and credits["balance"] == round(20 - 2 * 1.80, 2)  # 2 x 2K


def test_one_engine_per_gpu_slot_each_with_its_own_device(
    tmp_path: Path, weights_cache: Path
) -> None:
    running = start_server(
        tmp_path,
        f"sqlite:///{tmp_path / 'gpus.db'}",
        weights_cache,
        embedded_worker=True,
        extra_env={"KREASERVE_ENGINE_GPUS": "0,1"},
    )
    try:
        with running.client(running.key(credits=5)) as client:
            tasks = [
                client.post(
                    "/v1/images/generations", json={"model": "krea-2-turbo", "prompt": p}
                ).json()
                for p in PROMPTS[:2]
            ]
            done = [wait_until_done(client, t["id"])[-1] for t in tasks]
        ready = httpx.get(f"{running.url}/readyz").json()
    finally:
        running.stop()
    assert [t["status"] for t in done] == ["completed", "completed"]
    log = running.api.output()
    ready_lines = [line for line in log.splitlines() if "engine ready" in line]
    assert len(ready_lines) == 2, log
    for slot in ("0", "1"):  # each child reports the CUDA_VISIBLE_DEVICES it was started with
        assert any(line.endswith(f"on cpu (CUDA_VISIBLE_DEVICES={slot})") for line in ready_lines)
    devices = sorted(e["device"] for e in ready["engines"] if e["state"] == "ready")
    assert devices == ["cpu (CUDA_VISIBLE_DEVICES=0)", "cpu (CUDA_VISIBLE_DEVICES=1)"]
