"""The code passes ruff: its lint rules and its formatter (both configured in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PATHS = ["kreaserve", "tests", "bench"]


def ruff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, *PATHS], capture_output=True, text=True, cwd=ROOT
    )


def test_ruff_is_clean() -> None:
    result = ruff("check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_code_is_formatted() -> None:
    result = ruff("format", "--check")
    assert result.returncode == 0, "run `ruff format kreaserve tests bench`:\n" + result.stdout
