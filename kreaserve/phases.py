"""What a processing task is doing now, named the same by the worker that records it and
the API that streams it (GET /v1/tasks/{id}/events): plain names, no dependencies."""

from __future__ import annotations

ENCODING = "encoding"
DECODING = "decoding"
CHECKING = "checking"
STORING = "storing"
_DENOISING = "denoising "


def denoising(step: int, total: int) -> str:
    """The phase after `step` of `total` denoising steps are done; once the last is,
    the image is being decoded."""
    return DECODING if step >= total else f"{_DENOISING}{step}/{total}"


def rank(phase: str | None) -> int:
    """The order of a phase within one attempt (0-49999): later phases rank higher, so an
    event id made of it grows as the task advances."""
    if phase is None or phase == ENCODING:
        return 10000
    if phase.startswith(_DENOISING):
        done, _, _total = phase.removeprefix(_DENOISING).partition("/")
        return 10000 + min(int(done) if done.isdigit() else 0, 9999)
    return {DECODING: 20000, CHECKING: 30000, STORING: 40000}.get(phase, 10000)
