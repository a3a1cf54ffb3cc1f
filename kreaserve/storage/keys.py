"""The names result images are stored under, one function for every storage backend."""

from __future__ import annotations

from kreaserve import images


def result_key(task_id: str, attempt: int, index: int = 0, fmt: str = "png") -> str:
    """The key of image `index` of one attempt at a task: `<task_id>/<attempt>-<index>.<ext>`,
    the extension that of its `output_format` (png, jpg, webp).

    The attempt is part of the name so that a worker that lost its lease (frozen past it,
    say) can only ever write or delete its own attempt's file, never the one the task's new
    owner wrote under the same task."""
    return f"{task_id}/{attempt}-{index}.{images.extension(fmt)}"
