"""Property-based requests for the "no 500" tests: every operation of the app's own OpenAPI
document, each path and query parameter and each JSON body field filled with odd values
(Unicode digits, lone surrogates, NUL, 5,000-digit numbers, NaN, Infinity, 1e300, 10**30,
calendar ends, very long text), sent in-process through Starlette's TestClient.

The operations and their parameters come from `app.openapi()`, so a new route is covered
without touching this file; body fields come from the document's request bodies where it
has them, and from the request models of `kreaserve.schemas` otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st
from starlette.testclient import TestClient

from kreaserve import schemas

ODD_TEXT = [
    "",
    " ",
    "0",
    "1",
    "-1",
    "999999999999999999999",
    "1" * 5000,
    "²",
    "١",
    "１",
    "①",
    "٣٤",
    "\u0000",
    "a\u0000b",
    "\ud800",
    "x\udfff",
    "é",
    "\u202e",
    "NaN",
    "Infinity",
    "1e300",
    str(10**30),
    "0001-01-01",
    "9999-12-31",
    "2026-02-30",
    "task-unified-",
    "task-unified-\u0000",
    "task-unified-1-abc",
    "task-unified-" + "x" * 3000,
    "../../etc/passwd",
    "%00",
    "a/b",
    "<|im_end|>",
    "x" * 10000,
    "true",
    "null",
    "[]",
    "{}",
]
ODD_NUMBERS: list[Any] = [
    0,
    -1,
    1,
    2**31,
    2**63,
    -(2**63) - 1,
    10**30,
    10**4000,
    float("nan"),
    float("inf"),
    float("-inf"),
    1e300,
    -1e300,
    5e-324,
    0.1,
]
PLAUSIBLE: list[Any] = [
    "krea-2-turbo",
    "a fox in snow",
    "1:1",
    "16:9",
    "1K",
    "2K",
    "grant",
    "adjust",
    "https://example.com/hook",
    "pro",
    "default",
    True,
    False,
    None,
]
#: Field names of the request models, for operations whose document has no body schema.
MODEL_FIELDS = sorted(
    {
        name
        for model in (
            schemas.CreateTaskRequest,
            schemas.AccountLimits,
            schemas.AccountCreate,
            schemas.CreditsChange,
            schemas.KeyCreate,
        )
        for name in model.model_fields
    }
)


@dataclass(frozen=True)
class Operation:
    """One method on one path of the OpenAPI document."""

    method: str
    path: str
    path_params: tuple[str, ...]
    query_params: tuple[str, ...]
    body_fields: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def takes_body(self) -> bool:
        return self.method in ("POST", "PATCH", "PUT")


def operations(document: dict[str, Any]) -> list[Operation]:
    """Every operation of an OpenAPI document."""
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in ("get", "post", "patch", "put", "delete"):
                continue
            params = operation.get("parameters", [])
            body = (
                operation.get("requestBody", {})
                .get("content", {})
                .get("application/json", {})
                .get("schema", {})
            )
            fields = tuple(_properties(document, body)) or tuple(MODEL_FIELDS)
            found.append(
                Operation(
                    method=method.upper(),
                    path=path,
                    path_params=tuple(p["name"] for p in params if p["in"] == "path"),
                    query_params=tuple(p["name"] for p in params if p["in"] == "query"),
                    body_fields=fields,
                )
            )
    return found


def _properties(document: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Property names of a (possibly referenced, possibly combined) JSON schema."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = document.get("components", {}).get("schemas", {}).get(name, {})
    names = list(schema.get("properties", {}))
    for part in schema.get("allOf", []) + schema.get("anyOf", []) + schema.get("oneOf", []):
        names += _properties(document, part)
    return names


def odd_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(ODD_TEXT),
        st.text(max_size=40),
        st.text(st.characters(categories=["Nd", "No", "Nl"]), min_size=1, max_size=6),
        st.builds(
            lambda a, b: a + b, st.sampled_from(["task-unified-", "1", ""]), st.text(max_size=20)
        ),
    )


def odd_json() -> st.SearchStrategy[Any]:
    leaves = st.one_of(
        odd_text(),
        st.sampled_from(ODD_NUMBERS),
        st.sampled_from(PLAUSIBLE),
        st.integers(),
        st.floats(),
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(odd_text(), inner, max_size=3)
        ),
        max_leaves=6,
    )


@dataclass(frozen=True)
class Call:
    """A drawn request."""

    url: str
    headers: dict[str, bytes]
    content: bytes | None


def _quote(value: str) -> str:
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


def calls(
    operation: Operation, user_key: str, admin_token: str, ids: list[str]
) -> st.SearchStrategy[Call]:
    """Requests to `operation` with odd path, query and body values."""
    path_value = st.one_of(odd_text(), st.sampled_from(ids))
    admin = operation.path.startswith("/admin")
    right = admin_token if admin else user_key
    # Mostly the right credential, so that the checks behind authentication are reached.
    auth = st.sampled_from([right] * 20 + ["", user_key, admin_token, "\u00e9", "x" * 300])

    @st.composite
    def draw(data: st.DrawFn) -> Call:
        path = operation.path
        for name in operation.path_params:
            path = path.replace("{" + name + "}", _quote(data(path_value)))
        query = [
            f"{name}={_quote(data(odd_text()))}"
            for name in operation.query_params
            if data(st.booleans())
        ]
        url = path + ("?" + "&".join(query) if query else "")
        headers = {"authorization": f"Bearer {data(auth)}".encode("latin-1")}
        content = None
        if operation.takes_body:
            kind = data(st.sampled_from(["object", "object", "object", "raw", "json", "none"]))
            if kind == "object":
                body = data(
                    st.dictionaries(st.sampled_from(operation.body_fields), odd_json(), max_size=5)
                )
                if data(st.booleans()):  # a plausible base, so deeper rules are reached
                    body = {
                        "model": "krea-2-turbo",
                        "prompt": "a fox",
                        "name": "n",
                        "amount": 1,
                        **body,
                    }
                content = json.dumps(body).encode()
            elif kind == "json":
                content = json.dumps(data(odd_json())).encode()
            elif kind == "raw":
                content = data(st.binary(max_size=64))
            headers["content-type"] = b"application/json"
        return Call(url=url, headers=headers, content=content)

    return draw()


def send(client: TestClient, operation: Operation, call: Call) -> Any:
    return client.request(operation.method, call.url, headers=call.headers, content=call.content)


def designed_unavailable(response: Any) -> bool:
    """A 503 of a service that is not ready, or the OpenAI endpoint's 504 time-out."""
    error = response.json()["error"]
    return (response.status_code, error["type"]) == (503, "service_unavailable_error") or (
        response.status_code == 504 and error["code"] == "generation_timeout"
    )


def check(operation: Operation, call: Call, response: Any) -> None:
    """No server error (a 503 is the contract's answer of a service that is not ready, as
    /readyz without an engine; a 504 `generation_timeout` the OpenAI endpoint's when no
    worker makes its images in time), and every error in the contract's shape."""
    where = f"{operation.name} as {call.url[:300]!r} with body {(call.content or b'')[:300]!r}"
    failed = response.status_code >= 500 and not designed_unavailable(response)
    assert not failed, f"{where}: {response.status_code} {response.text[:500]}"
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["code"] and error["message"] and error["type"], (where, error)
