"""Hooks for the schemathesis run of tests/integration/test_openapi.py.

One filter only: JSON Schema's `integer` admits 7.0 (a number with no fraction), but
the contract refuses a decimal point where it wants an integer (seed 7.0 is
invalid_seed). No schema keyword can say "no decimal point", so positive bodies in which
the generator wrote an integer field as a float are left out; everything else the
generator makes is sent as it is.
"""

from __future__ import annotations

from typing import Any

import schemathesis

INTEGER_FIELDS = {"seed", "requests_per_minute", "max_tasks_in_flight"}


@schemathesis.hook
def filter_body(_context: Any, body: Any) -> bool:
    if not isinstance(body, dict):
        return True
    return not any(isinstance(body.get(name), float) for name in INTEGER_FIELDS)
