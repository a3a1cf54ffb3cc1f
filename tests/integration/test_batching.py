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
from sqlalchemy import select

from kreaserve.db.models import Task
from tests.conftest import Server, start_server
from tests.integration.test_generation import fetch_image, wait_until_done

PROMPTS = [
    "a red fox in snow",
    "a lighthouse at dusk over black rocks, long exposure",
    "cat",
    "an isometric cutaway of a tiny bakery at dawn",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, weights_cache: Path) -> Iterator[Server]:
    """One batching server for the module (the service's default, trimmed text): the
    pixel-level proofs for both modes, batch against alone, are the engine's
    (tests/engine/test_engine_batching.py); here what the service adds is checked."""
    tmp = tmp_path_factory.mktemp("batching")
    running = start_server(
        tmp,
        f"sqlite:///{tmp / 'batch.db'}",
        weights_cache,
        embedded_worker=True,
        extra_env={"KREASERVE_BATCH_SIZE": "4", "KREASERVE_BATCH_WAIT_MS": "1000"},
    )
    yield running
    running.stop()


def pixels(url: str) -> np.ndarray:
    return np.asarray(fetch_image(url).convert("RGB")).astype(np.int16)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_same_size_tasks_run_as_one_batch_and_each_gets_its_own_image(server: Server) -> None:
    with server.client(server.key(credits=20)) as client:
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
        # The first and the last task again, one at a time (each a batch of one): a batch
        # whose results went back in another order (reversed, rotated) gives a task the
        # image of another task, which these two catch.
        solo = {}
        for index in (0, len(bodies) - 1):
            task = client.post("/v1/images/generations", json=bodies[index]).json()
            solo[index] = wait_until_done(client, task["id"])[-1]
        credits = client.get("/v1/credits").json()
    log = server.api.output()
    assert "batch of 4" in log and "batch of 5" not in log  # the 16:9 task ran on its own
    assert all(t["status"] == "completed" for t in batched + list(solo.values()))
    assert credits["reserved"] == 0 and credits["balance"] == round(20 - 7 * 0.45, 2)
    alone = {index: pixels(task["results"][0]) for index, task in solo.items()}
    for index in alone:
        ours = pixels(batched[index]["results"][0])
        # A batch of prompts of different lengths carries a key mask, one prompt alone does
        # not: bf16 rounding differs, the image does not (see BENCHMARKS.md).
        assert psnr(ours, alone[index]) > 40
        [other_index] = set(alone) - {index}
        assert psnr(ours, alone[other_index]) < 30  # the other task's: another image (~24 dB)


def test_cancelling_one_task_of_a_batch_leaves_the_others_to_finish(server: Server) -> None:
    """The cancelled task leaves the batch at the next denoising step; the other two go on.
    Shown by the server's own clock (the tasks' finished_at), not by this process's: the
    victim ended well before the batch did, which a cancel that waited for the batch's end
    (or that stopped the whole batch) cannot do."""
    with server.client(server.key(credits=20)) as client:
        tasks = [
            client.post(
                "/v1/images/generations", json={"model": "krea-2-turbo", "prompt": p}
            ).json()
            for p in PROMPTS[:3]
        ]
        victim = tasks[1]["id"]
        deadline = time.monotonic() + 120
        while client.get(f"/v1/tasks/{victim}").json()["progress"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert client.post(f"/v1/tasks/{victim}/cancel").status_code == 200
        final = wait_until_done(client, victim)[-1]
        others = [wait_until_done(client, t["id"])[-1] for t in (tasks[0], tasks[2])]
        credits = client.get("/v1/credits").json()
    assert "batch of 3" in server.api.output()
    assert final["status"] == "cancelled", final
    assert [t["status"] for t in others] == ["completed", "completed"]
    assert credits["reserved"] == 0 and credits["balance"] == round(20 - 2 * 0.45, 2)
    ended = finished_at(server, [t["id"] for t in tasks])
    # The two others still had denoising steps and both decodes to do (seconds here).
    assert min(ended[0], ended[2]) - ended[1] > 0.5, ended


def finished_at(server: Server, task_ids: list[str]) -> list[float]:
    """The server's clock at each task's end, from the database."""
    with server.database().reading() as connection:
        rows = connection.execute(select(Task.id, Task.finished_at).where(Task.id.in_(task_ids)))
        found = dict(rows.all())
    return [found[task_id] for task_id in task_ids]


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
