"""The names result images are stored under, one function for every storage backend."""

from __future__ import annotations


def result_key(task_id: str, attempt: int, index: int = 0) -> str:
    """The key of image `index` of one attempt at a task: `<task_id>/<attempt>-<index>.png`.

    The attempt is part of the name so that a worker that lost its lease (frozen past it,
    say) can only ever write or delete its own attempt's file, never the one the task's new
    owner wrote under the same task."""
    return f"{task_id}/{attempt}-{index}.png"
