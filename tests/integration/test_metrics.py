"""GET /metrics of a running API and `kreaserve worker --metrics-port`, scraped over HTTP and
parsed with prometheus-client's parser, moving as tasks are created, run, fail and are
cancelled."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Proc, Server, free_port, spawn, start_server, wait_for
from tests.integration.test_generation import wait_until_done

GOOD = {"model": "krea-2-turbo", "prompt": "a lighthouse at dusk", "size": "1:1"}

Samples = dict[tuple[str, frozenset], float]


def scrape(url: str, headers: dict[str, str] | None = None) -> Samples:
    response = httpx.get(url, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every series of `name` whose labels include `labels`."""
    return sum(
        v for (n, series), v in samples.items() if n == name and set(labels.items()) <= series
    )


@pytest.fixture
def api_only(database_url: str, weights_cache: Path, tmp_path: Path) -> Iterator[Server]:
    """An API without workers; the test starts a worker with --metrics-port when it wants
    the queue to move. Images of nsfw_check tasks are withheld (a failure on demand)."""
    server = start_server(
        tmp_path,
        database_url,
        weights_cache,
        embedded_worker=False,
        extra_env={
            "KREASERVE_MODERATION_IMAGE_THRESHOLD": "0.00001",
            "KREASERVE_METRICS_TOKEN": "scrape-me",
        },
    )
    yield server
    server.stop()


def test_metrics_move_as_tasks_run(api_only: Server, tmp_path: Path) -> None:
    server = api_only
    auth = {"Authorization": "Bearer scrape-me"}
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    before = scrape(f"{server.url}/metrics", auth)
    assert value(before, "kreaserve_queue_depth") == 0
    assert value(before, "kreaserve_queue_oldest_age_seconds") == 0

    with server.client(server.key(credits=10)) as client:
        ok = [client.post("/v1/images/generations", json=GOOD).json() for _ in range(2)]
        refused = client.post("/v1/images/generations", json={**GOOD, "nsfw_check": True}).json()
        dropped = client.post("/v1/images/generations", json=GOOD).json()
        assert client.post(f"/v1/tasks/{dropped['id']}/cancel").status_code == 200
        assert client.get("/v1/tasks/task-unified-nope").status_code == 404
        assert client.get("/no/such/route").status_code == 404
        time.sleep(1.1)
        queued = scrape(f"{server.url}/metrics", auth)
        assert value(queued, "kreaserve_queue_depth") == 3
        assert value(queued, "kreaserve_queue_oldest_age_seconds") >= 1
        assert value(queued, "kreaserve_engines", state="ready") == 0
        assert value(queued, "kreaserve_tasks_created_total", tier="1K") == 4
        assert value(queued, "kreaserve_tasks_cancelled_total", tier="1K") == 1
        assert (
            value(
                queued,
                "kreaserve_http_requests_total",
                method="POST",
                route="/v1/images/generations",
                status="200",
            )
            == 4
        )
        assert (
            value(
                queued,
                "kreaserve_http_requests_total",
                method="GET",
                route="/v1/tasks/{task_id}",
                status="404",
            )
            == 1
        )
        assert (
            value(
                queued,
                "kreaserve_http_requests_total",
                method="GET",
                route="unmatched",
                status="404",
            )
            == 1
        )
        assert (
            value(
                queued,
                "kreaserve_http_request_duration_seconds_count",
                method="POST",
                route="/v1/images/generations",
            )
            == 4
        )
        assert total(queued, "kreaserve_http_requests_total", route="/no/such/route") == 0

        port = free_port()
        worker = spawn(["worker", "--metrics-port", str(port)], server.env, tmp_path / "worker.log")
        server.workers.append(worker)
        wait_for(f"{server.url}/readyz", server.api, timeout=300)
        ended = [wait_until_done(client, task["id"])[-1] for task in [*ok, refused]]
    assert [task["status"] for task in ended] == ["completed", "completed", "failed"]
    worker_metrics = scrape(f"http://127.0.0.1:{port}/metrics")
    after = scrape(f"{server.url}/metrics", auth)
    assert value(after, "kreaserve_queue_depth") == 0
    assert value(after, "kreaserve_queue_oldest_age_seconds") == 0
    assert value(after, "kreaserve_engines", state="ready") == 1
    assert value(worker_metrics, "kreaserve_engines", state="ready") == 1
    assert value(worker_metrics, "kreaserve_tasks_completed_total", tier="1K") == 2
    assert (
        value(
            worker_metrics,
            "kreaserve_tasks_failed_total",
            tier="1K",
            code="content_policy_violation",
        )
        == 1
    )
    assert value(worker_metrics, "kreaserve_credits_charged_total", tier="1K") == pytest.approx(0.9)
    assert total(worker_metrics, "kreaserve_queue_wait_seconds_count", size="1024x1024") == 3
    assert total(worker_metrics, "kreaserve_queue_wait_seconds_sum") >= 3  # waited > 1 s each
    assert total(worker_metrics, "kreaserve_generation_seconds_count", size="1024x1024") == 2
    assert total(worker_metrics, "kreaserve_generation_seconds_sum") > 0
    worker_proc: Proc = server.workers[0]
    assert worker_proc.popen.poll() is None
