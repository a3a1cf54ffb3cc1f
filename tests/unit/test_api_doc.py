"""docs/api.md, the contract as the project documents it, says what the code does (as
tests/unit/test_docs.py checks the README's settings)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kreaserve import contract
from kreaserve.api.app import create_app
from kreaserve.config import Settings

ROOT = Path(__file__).resolve().parents[2]
API_DOC = (ROOT / "docs" / "api.md").read_text()


#: Served but left out of the OpenAPI document (pages, the document itself, metrics).
NOT_IN_SCHEMA = {"GET /", "GET /docs", "GET /openapi.json", "GET /metrics"}


def operations(tmp_path: Path) -> set[str]:
    app = create_app(Settings(data_dir=tmp_path, cache_dir=tmp_path / "cache", admin_token="x"))
    document = app.openapi()
    return NOT_IN_SCHEMA | {
        f"{method.upper()} {path}" for path, ops in document["paths"].items() for method in ops
    }


def test_every_operation_is_documented_and_every_documented_one_exists(tmp_path: Path) -> None:
    served = operations(tmp_path)
    documented = set(re.findall(r"`((?:GET|POST|PATCH|PUT|DELETE) /[^`\s]*)`", API_DOC))
    assert served - documented == set(), "operations missing from docs/api.md"
    assert documented - served == set(), "docs/api.md documents operations that do not exist"


def test_the_size_table_is_the_codes() -> None:
    rows = dict(re.findall(r"^\| (\d+:\d+) \| (\d+×\d+ \| \d+×\d+) \|$", API_DOC, re.M))
    assert set(rows) == set(contract.SIZES)
    for size in contract.SIZES:
        low, high = contract.PIXELS[(size, "1K")], contract.PIXELS[(size, "2K")]
        assert rows[size] == f"{low[0]}×{low[1]} | {high[0]}×{high[1]}"


@pytest.mark.parametrize("code", sorted(contract.TASK_ERROR_CODES))
def test_every_task_error_code_is_documented(code: str) -> None:
    assert f"`{code}`" in API_DOC


@pytest.mark.parametrize(("status", "type_"), sorted(contract.ERROR_TYPES.items()))
def test_every_error_type_is_documented(status: int, type_: str) -> None:
    assert f"| {status} | `{type_}` |" in API_DOC


def test_the_limits_are_the_codes() -> None:
    assert f"at most {contract.MAX_PROMPT_TOKENS} tokens" in API_DOC
    assert f"0 ≤ seed ≤ {contract.SEED_MAX}" in API_DOC
    assert f"at most {contract.CALLBACK_URL_MAX} characters" in API_DOC
    delays = ", ".join(f"{d:.0f}" for d in contract.CALLBACK_RETRY_DELAYS)
    assert f"{delays} seconds after each failure" in " ".join(API_DOC.split())
    assert f"{contract.CALLBACK_TIMEOUT:.0f} seconds per attempt" in API_DOC


def test_nothing_cites_a_file_the_user_does_not_have() -> None:
    for path in [ROOT / "README.md", *sorted((ROOT / "kreaserve").rglob("*.py"))]:
        assert "shared/SPEC.md" not in path.read_text(), path
