"""Invalid settings as one line per bad variable, naming it and what it accepts.

pydantic reports an invalid environment as a multi-line ValidationError (or, for JSON
fields, a SettingsError that names only the field); an operator needs the variable's
name, the value seen, and what would be accepted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from types import UnionType
from typing import Any, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsError

_TYPE_WORDS = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "text",
    dict: "a JSON object",
}


def accepts(model: type[BaseModel], name: str) -> str:
    """What field `name` takes, in words: "an integer from 1 to 16", "auto, on or off"."""
    field = model.model_fields[name]
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if "accepts" in extra:
        return str(extra["accepts"])
    annotation = field.annotation
    if get_origin(annotation) in (Union, UnionType):
        annotation = next(kind for kind in get_args(annotation) if kind is not type(None))
    kind: Any = get_origin(annotation) or annotation
    words = _TYPE_WORDS.get(kind, "a path" if "Path" in str(kind) else "text")
    low = high = None
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            low = f"from {item.ge}"
        elif isinstance(item, annotated_types.Gt):
            low = f"above {item.gt}"
        elif isinstance(item, annotated_types.Le):
            high = f"to {item.le}" if low and low.startswith("from") else f"at most {item.le}"
        elif getattr(item, "pattern", None):
            choices = re.fullmatch(r"\^\(([\w|]+)\)\$", item.pattern)
            if choices:
                options = choices.group(1).split("|")
                return ", ".join(options[:-1]) + " or " + options[-1]
    return " ".join(part for part in (words, low, high) if part)


def _where(name: str, flags: Iterable[str]) -> str:
    return f"--{name.replace('_', '-')}" if name in flags else f"KREASERVE_{name.upper()}"


def explain(
    model: type[BaseModel], exc: ValidationError | SettingsError, flags: Iterable[str] = ()
) -> list[str]:
    """One line per bad setting. `flags` names the fields that came from command-line flags."""
    flags = set(flags)
    if isinstance(exc, SettingsError):
        found = re.search(r'field "(\w+)"', str(exc))
        if not found or found.group(1) not in model.model_fields:
            return [str(exc)]
        name = found.group(1)
        return [
            f"{_where(name, flags)} is not valid: it takes "
            f"{accepts(model, name)} (see the README's settings table)"
        ]
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ())]
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        if not loc or loc[0] not in model.model_fields:
            lines.append(message)
            continue
        name = loc[0]
        value: Any = error.get("input")
        shown = f"={value!r}" if isinstance(value, str | int | float) else ""
        reason = (
            message if error.get("type") == "value_error" else f"it takes {accepts(model, name)}"
        )
        lines.append(f"{_where(name, flags)}{shown} is not valid: {reason}")
    return lines
