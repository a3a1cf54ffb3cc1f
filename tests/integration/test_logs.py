"""Logs over a real server: one access line per request, X-Request-ID taken or made and
echoed, KREASERVE_LOG_FORMAT=json giving one JSON object per line, never a key, prompt or
signed URL; with KREASERVE_TRACING=console, the request is a span of the caller's trace."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Server, start_server

PROMPT = "a zanzibar quokka juggling teacups"


@pytest.fixture
def json_server(database_url: str, weights_cache: Path, tmp_path: Path) -> Iterator[Server]:
    server = start_server(
        tmp_path,
        database_url,
        weights_cache,
        embedded_worker=False,
        extra_env={"KREASERVE_LOG_FORMAT": "json", "KREASERVE_TRACING": "console"},
    )
    yield server
    server.stop()


def entries(server: Server) -> list[dict]:
    lines = [line for line in server.api.output().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        parsed.append(json.loads(line))  # every line is one JSON object
    return parsed


def access(server: Server, request_id: str, timeout: float = 5) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        found = [
            e
            for e in entries(server)
            if e.get("logger") == "kreaserve.access" and e.get("request_id") == request_id
        ]
        if found:
            assert len(found) == 1, found
            return found[0]
        assert time.monotonic() < deadline, f"no access line for {request_id}"
        time.sleep(0.05)


def test_access_lines_request_ids_and_json(json_server: Server) -> None:
    server = json_server
    account_id, key = server.account()
    trace_id = secrets.token_hex(16)
    with server.client(key) as client:
        created = client.post(
            "/v1/images/generations",
            json={"prompt": PROMPT, "model": "krea-2-turbo"},
            headers={
                "X-Request-ID": "req-create-1",
                "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01",
            },
        )
        assert created.status_code == 200, created.text
        assert created.headers["x-request-id"] == "req-create-1"
        task_id = created.json()["id"]
        polled = client.get(f"/v1/tasks/{task_id}")
        made = polled.headers["x-request-id"]
        assert len(made) == 32 and int(made, 16) >= 0  # generated when not sent
        odd = client.get("/v1/credits", headers={"X-Request-ID": "bad id\twith spaces"})
        assert odd.headers["x-request-id"] != "bad id\twith spaces"
        signed = client.get("/files/task-unified-x/0.png?expires=1&sig=SIGNEDSECRET")
        assert signed.status_code in (403, 404, 410)
    create_line = access(server, "req-create-1")
    assert create_line["method"] == "POST" and create_line["status"] == 200
    assert create_line["route"] == "/v1/images/generations"
    assert create_line["account_id"] == account_id and create_line["task_id"] == task_id
    assert create_line["duration_ms"] > 0 and create_line["level"] == "INFO"
    poll_line = access(server, made)
    assert poll_line["route"] == "/v1/tasks/{task_id}" and poll_line["task_id"] == task_id
    files_line = access(server, signed.headers["x-request-id"])
    assert files_line["route"].startswith("/files/")
    whole = server.api.output()
    assert key not in whole and key[:11] not in whole  # never the key
    assert PROMPT not in whole and "zanzibar" not in whole  # never the prompt
    assert "SIGNEDSECRET" not in whole  # never a signature
    logs = [e for e in entries(server) if "logger" in e]
    assert "task-unified-x" not in json.dumps(logs)  # the logs give routes, not paths
    spans = [e for e in entries(server) if "context" in e and "name" in e]
    create_span = next(s for s in spans if s["name"] == "POST /v1/images/generations")
    assert create_span["context"]["trace_id"] == f"0x{trace_id}"  # the caller's trace
    assert create_span["kind"] == "SpanKind.SERVER"
    with server.database().transaction() as session:
        from kreaserve.db.models import Task

        stored = session.get(Task, task_id).traceparent
    assert stored.split("-")[1] == trace_id
    span_ids = {
        s["context"]["span_id"][2:] for s in spans if s["context"]["trace_id"] == f"0x{trace_id}"
    }
    assert stored.split("-")[2] in span_ids  # a span of the create request
