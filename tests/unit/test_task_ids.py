"""Task ids: the contract's shape, and a suffix drawn uniformly (every character at every
position, no position stuck), so ids stay unguessable."""

from __future__ import annotations

import re
import string
from collections import Counter

from kreaserve.contract import TASK_ID_PREFIX, new_task_id

SHAPE = re.compile(r"task-unified-1756817821-[a-z0-9]{8}")


def test_ids_have_the_contracts_shape_and_do_not_repeat() -> None:
    ids = [new_task_id(1756817821) for _ in range(2000)]
    assert all(SHAPE.fullmatch(task_id) for task_id in ids)
    assert all(task_id.startswith(TASK_ID_PREFIX) for task_id in ids)
    assert len(set(ids)) == len(ids)


def test_every_position_takes_every_character_about_equally_often() -> None:
    suffixes = [new_task_id(1)[-8:] for _ in range(36000)]
    alphabet = set(string.ascii_lowercase + string.digits)
    for position in range(8):
        counts = Counter(suffix[position] for suffix in suffixes)
        assert set(counts) == alphabet
        # 1,000 expected per character; a binomial's sd is about 31, so 800-1,200 is
        # over six sd either side (a base-36 digit off by one bit would miss by far more).
        assert 800 <= min(counts.values()) and max(counts.values()) <= 1200, (position, counts)
