"""The OpenAPI document says what the API does: schemathesis, with its default checks,
against a real server finds no mismatch between the document and the answers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, Server, start_server

#: One run covers the user's, the operator's and the public operations: each operation gets
#: the token it is called with (the project's `headers`, the operator's token for /admin/).
#: Four exceptions, each narrow: a create's Idempotency-Key may be drawn twice for two
#: different bodies, which is a 409 by design; GET /v1/usage allows at most 366 days from
#: start to end, a cross-field rule JSON Schema cannot state, so a valid-looking pair of
#: dates may get 400; GET /v1/tasks takes only a cursor it made (opaque: no schema can say
#: which strings those are), so a valid-looking cursor may get 400; GET /readyz answers
#: 503 by design while no engine is ready (this server has none). A task's event stream
#: stays open until the task ends, which on this server (no worker) is never: its requests
#: time out after 2 s instead of the default 10 (a time-out is not a finding).
CONFIG = """
headers = {{ Authorization = "Bearer {user}" }}

[[operations]]
include-path-regex = "^/admin/"
headers = {{ Authorization = "Bearer {operator}" }}

[[operations]]
include-path = "/v1/images/generations"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "409", "429"]

[[operations]]
include-path = "/v1/usage"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "429"]

[[operations]]
include-path = "/v1/tasks"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "429"]

[[operations]]
include-path = "/v1/tasks/{{task_id}}/events"
request-timeout = 2

[[operations]]
include-path = "/readyz"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "503"]
"""


@pytest.fixture
def docs_server(database_url: str, weights_cache: Path, tmp_path: Path) -> Iterator[Server]:
    server = start_server(
        tmp_path,
        database_url,
        weights_cache,
        embedded_worker=False,
        extra_env={
            "KREASERVE_ADMIN_TOKEN": ADMIN_TOKEN,
            "KREASERVE_MAX_TASKS_IN_FLIGHT": "1000000000",
        },
    )
    yield server
    server.stop()


def test_the_document_is_complete(api_server: Server) -> None:
    document = httpx.get(f"{api_server.url}/openapi.json").json()
    operations = {
        (method, path): op for path, ops in document["paths"].items() for method, op in ops.items()
    }
    assert len(operations) >= 27
    bodies = {key for key, op in operations.items() if "requestBody" in op}
    assert ("post", "/v1/images/generations") in bodies and ("post", "/v1/keys") in bodies
    create = operations[("post", "/v1/images/generations")]["requestBody"]["content"]
    assert create["application/json"]["example"]["prompt"]
    schemas = document["components"]["schemas"]
    assert set(schemas["CreateTaskRequest"]["properties"]["size"]["anyOf"][0]["enum"]) >= {
        "1:1",
        "16:9",
    }
    assert "HTTPValidationError" not in schemas and "422" not in str(
        [op["responses"].keys() for op in operations.values()]
    )
    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    for (_method, path), op in operations.items():
        assert op["responses"]["default"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }
        if path.startswith("/v1/"):
            assert op["security"] == [{"apiKey": []}]


def schemathesis(server: Server, tmp_path: Path, paths: str, user: str) -> str:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.format(user=user, operator=ADMIN_TOKEN))
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.integration.schemathesis_hooks",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(config),
            "run",
            f"{server.url}/openapi.json",
            "--include-path-regex",
            paths,
            "--max-examples",
            "10",
            "--seed",
            "14",
            "--phases",
            "examples,coverage,fuzzing",
            "--no-color",
        ],
        env=env,
        cwd=tmp_path,  # its cache folder goes there, not into the checkout
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    return done.stdout


def test_schemathesis_finds_no_mismatch(docs_server: Server, tmp_path: Path) -> None:
    key = docs_server.key(credits=1_000_000_000)
    output = schemathesis(docs_server, tmp_path, "^/(v1/|admin/|healthz$|readyz$|files/)", key)
    assert "No issues found" in output or "passed" in output, output[-3000:]
    # Every part was called with a token that it takes: an operator route called with the
    # user's key would answer 401 to every case and still pass. The server's access log
    # shows what each part answered.
    answered = docs_server.api.output()
    for part in ("/v1/", "/admin/", "/healthz"):
        assert re.search(rf"kreaserve\.access INFO \w+ {part}\S* 2\d\d ", answered), part
