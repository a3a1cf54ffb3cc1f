"""`kreaserve generate`'s progress bar words: the events stream's phase and queue place,
else the status (a server without events)."""

from __future__ import annotations

import pytest

from kreaserve.cli.generate import describe
from kreaserve.client import Task

BASE = {"id": "task-unified-1-abcdefgh", "created": 1, "model": "krea-2-turbo"}


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"status": "processing", "phase": "denoising 3/8"}, "denoising 3/8"),
        ({"status": "processing", "phase": "storing"}, "storing"),
        ({"status": "pending", "position": 1}, "queued, next"),
        ({"status": "pending", "position": 4}, "queued, 4 in line"),
        ({"status": "processing"}, "processing"),  # polled: no phase
        ({"status": "completed", "phase": "storing"}, "completed"),
    ],
)
def test_the_bar_says_the_phase_or_place(fields: dict, words: str) -> None:
    assert describe(Task.model_validate({**BASE, **fields})) == words
