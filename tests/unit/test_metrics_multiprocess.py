"""In prometheus-client's multiprocess mode, /metrics adds up every process's counters."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

COUNT = """
from types import SimpleNamespace
from kreaserve import metrics
metrics.task_created(SimpleNamespace(quality="{tier}"))
metrics.HTTP_REQUESTS.labels("GET", "/healthz", "200").inc()
"""

RENDER = (
    "import sys; from kreaserve import metrics; sys.stdout.write(metrics.render(None).decode())"
)


def run(code: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_counters_of_several_processes_are_added_up(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for tier in ("1K", "1K", "2K"):
        run(COUNT.format(tier=tier), env)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(run(RENDER, env))
        for s in family.samples
    }
    assert samples[("kreaserve_tasks_created_total", (("tier", "1K"),))] == 2
    assert samples[("kreaserve_tasks_created_total", (("tier", "2K"),))] == 1
    key = (
        "kreaserve_http_requests_total",
        (("method", "GET"), ("route", "/healthz"), ("status", "200")),
    )
    assert samples[key] == 3
