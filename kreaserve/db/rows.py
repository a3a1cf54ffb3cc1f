"""How many rows an UPDATE or DELETE changed, with its type.

`Session.execute` is typed as returning a plain `Result`; the row count is on its
`CursorResult` subclass, which is what a DML statement returns at run time."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, Result


def changed_rows(result: Result[Any]) -> int:
    """The row count of the UPDATE or DELETE that produced `result`."""
    return cast(CursorResult[Any], result).rowcount
