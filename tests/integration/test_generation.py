"""Tasks end to end through a generating server: progress, results, pixels, seeds,
cancel mid-steps, credits. On SQLite with the embedded worker; on PostgreSQL with the
API and a separate `kreaserve worker` process."""

from __future__ import annotations

import io
import time

import httpx
import pytest
from PIL import Image

from kreaserve import contract, ledger
from tests.conftest import Server

GOOD = {"model": "krea-2-turbo", "prompt": "a red fox in snow"}


def wait_until_done(client: httpx.Client, task_id: str, timeout: float = 240) -> list[dict]:
    """Poll quickly; returns every distinct answer seen, the last one terminal."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(f"/v1/tasks/{task_id}")
        assert response.status_code == 200, response.text
        body = response.json()
        if not seen or (body["status"], body["progress"]) != (
            seen[-1]["status"],
            seen[-1]["progress"],
        ):
            seen.append(body)
        if body["status"] in contract.TERMINAL:
            return seen
        time.sleep(0.02)
    raise AssertionError(f"task {task_id} did not end: {seen[-1:]}")


def fetch_image(url: str) -> Image.Image:
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(response.content))


def test_task_moves_pending_processing_completed_with_rising_progress(full_server: Server) -> None:
    account_id, key = full_server.account(credits=10)
    with full_server.client(key) as client:
        created = client.post(
            "/v1/images/generations", json={**GOOD, "size": "16:9", "seed": 7}
        ).json()
        assert created["status"] == "pending"
        history = wait_until_done(client, created["id"])
        credits = client.get("/v1/credits").json()
    statuses = [h["status"] for h in history]
    assert statuses[-1] == "completed", history[-1]
    assert "processing" in statuses
    processing = [h["progress"] for h in history if h["status"] == "processing"]
    assert processing == sorted(processing), processing
    assert len(set(processing)) >= 4, f"progress should rise step by step: {processing}"
    assert all(0 <= p < 100 for p in processing)
    assert all(h["task_info"]["can_cancel"] for h in history[:-1])

    done = history[-1]
    assert done["progress"] == 100 and done["task_info"]["can_cancel"] is False
    assert "error" not in done and done["seed"] == 7
    assert len(done["results"]) == 1
    url = done["results"][0]
    assert url.startswith(full_server.url + "/files/")
    assert fetch_image(url).size == (1344, 768)
    # Billing confirmation: the reservation became a charge, exactly the price.
    assert credits == {
        "object": "credit_balance",
        "balance": 9.55,
        "reserved": 0.0,
        "available": 9.55,
        "user_group": "default",
    }
    with full_server.database().transaction() as session:
        assert ledger.balance_from_entries(session, account_id) == ledger.balance(
            session, account_id
        )


def test_same_seed_gives_identical_pixels_and_another_seed_does_not(full_server: Server) -> None:
    with full_server.client(full_server.key()) as client:
        ids = [
            client.post(
                "/v1/images/generations", json={**GOOD, "size": "1:2", "seed": seed}
            ).json()["id"]
            for seed in (1234, 1234, 1235)
        ]
        images = []
        for task_id in ids:
            done = wait_until_done(client, task_id)[-1]
            assert done["status"] == "completed", done
            images.append(fetch_image(done["results"][0]).convert("RGB"))
    assert images[0].size == (704, 1472)
    assert images[0].tobytes() == images[1].tobytes()
    assert images[0].tobytes() != images[2].tobytes()


def test_server_picked_seed_is_recorded_and_reproduces(full_server: Server) -> None:
    with full_server.client(full_server.key()) as client:
        first = client.post("/v1/images/generations", json={**GOOD, "seed": 0}).json()
        assert 1 <= first["seed"] <= contract.SEED_MAX
        done = wait_until_done(client, first["id"])[-1]
        again = client.post("/v1/images/generations", json={**GOOD, "seed": first["seed"]}).json()
        redo = wait_until_done(client, again["id"])[-1]
    assert done["seed"] == first["seed"] == redo["seed"]
    assert fetch_image(done["results"][0]).tobytes() == fetch_image(redo["results"][0]).tobytes()


@pytest.mark.timing
def test_cancel_while_processing_stops_before_the_next_step(full_server: Server) -> None:
    key = full_server.key(credits=10)
    with full_server.client(key) as client:
        task = client.post(
            "/v1/images/generations", json={**GOOD, "size": "1:1", "quality": "2K"}
        ).json()
        deadline = time.monotonic() + 120
        while True:  # wait until at least one denoising step is done
            body = client.get(f"/v1/tasks/{task['id']}").json()
            if body["status"] == "processing" and body["progress"] > 0:
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.02)
        progress_at_cancel = body["progress"]
        asked = time.monotonic()
        answer = client.post(f"/v1/tasks/{task['id']}/cancel")
        assert answer.status_code == 200, answer.text
        assert answer.json()["task_info"]["can_cancel"] is False
        history = wait_until_done(client, task["id"])
        ended = time.monotonic() - asked
        credits = client.get("/v1/credits").json()
    final = history[-1]
    assert final["status"] == "cancelled", final
    assert final["error"]["code"] == "request_cancelled"
    assert "results" not in final
    assert final["progress"] < 100 and final["progress"] <= progress_at_cancel + 24
    # A 2K image takes over 10 s here, most of it in the VAE decode; cancelling skips it.
    assert ended < 5, f"cancel took {ended:.1f} s"
    assert credits["reserved"] == 0 and credits["balance"] == 10


def test_cancel_of_a_completed_task_is_refused(full_server: Server) -> None:
    with full_server.client(full_server.key()) as client:
        task = client.post("/v1/images/generations", json=GOOD).json()
        wait_until_done(client, task["id"])
        response = client.post(f"/v1/tasks/{task['id']}/cancel")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "task_not_cancellable"


def test_tampered_result_url_is_403(full_server: Server) -> None:
    with full_server.client(full_server.key()) as client:
        task = client.post("/v1/images/generations", json=GOOD).json()
        url = wait_until_done(client, task["id"])[-1]["results"][0]
    assert httpx.get(url).status_code == 200
    base, query = url.split("?")
    params = dict(part.split("=") for part in query.split("&"))
    signature = params["signature"]
    # The last hex digit changed (to 0, or to 1 where it was 0 already: 1 time in 16).
    other_digit = "1" if signature[-1] == "0" else "0"
    tampered = [
        f"{base}?expires={int(params['expires']) + 1}&signature={signature}",
        f"{base}?expires={params['expires']}&signature={signature[:-1]}{other_digit}",
        f"{base}?expires={params['expires']}",
        base,
        base.replace("-0.png", "-1.png") + "?" + query,
        f"{full_server.url}/files/../secret.key?{query}",
    ]
    for bad in tampered:
        response = httpx.get(bad)
        assert response.status_code in (403, 404), (bad, response.status_code)
        if response.status_code == 403:
            assert response.json()["error"]["type"] == "permission_error"
    assert httpx.get(tampered[0]).status_code == 403


def test_readyz_reports_the_warm_engine_and_the_noise_warning(full_server: Server) -> None:
    body = httpx.get(f"{full_server.url}/readyz").json()
    assert body["status"] == "ready"
    assert any(e["state"] == "ready" and e["weights"] == "tiny-random" for e in body["engines"])
    assert any("noise" in w and "--weights" in w for w in body["warnings"])


def test_the_api_process_never_loads_torch(full_server: Server) -> None:
    """The API process maps no torch library; the engine child does."""
    import psutil

    api = psutil.Process(full_server.api.popen.pid)
    mapped = {m.path for m in api.memory_maps()}
    assert not [p for p in mapped if "libtorch" in p], "the API process loaded torch"
    engines = [
        c
        for w in [full_server.api, *full_server.workers]
        for c in psutil.Process(w.popen.pid).children(recursive=True)
    ]
    assert any("libtorch" in m.path for c in engines for m in c.memory_maps()), (
        "expected an engine child with torch loaded"
    )
