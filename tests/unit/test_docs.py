"""Every setting and every command is documented in the README (as datasette does)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kreaserve.cli import app
from kreaserve.config import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_in_the_readme(name: str) -> None:
    assert f"`KREASERVE_{name.upper()}`" in README


def commands() -> list[str]:
    import typer.main

    group = typer.main.get_command(app)
    names = []
    for name, command in group.commands.items():
        sub = getattr(command, "commands", None)
        names += [f"kreaserve {name} {s}" for s in sub] if sub else [f"kreaserve {name}"]
    return sorted(names)


@pytest.mark.parametrize("command", commands())
def test_every_command_is_in_the_readme(command: str) -> None:
    assert f"`{command}" in README
