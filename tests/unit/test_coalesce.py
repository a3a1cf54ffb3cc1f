"""kreaserve.db.coalesce: reads that arrive while others are out go together, none
waits for more than the statements before it, and failures reach only their batch."""

from __future__ import annotations

import asyncio

import pytest

from kreaserve.db.coalesce import Coalescer


class Store:
    """A fetch that holds each statement until the test lets it go."""

    def __init__(self, answer: dict[int, str] | str | None = None) -> None:
        self.batches: list[list[int]] = []
        self.gates: list[asyncio.Event] = []
        self.answer = answer
        self.fail: Exception | None = None

    async def fetch(self, keys: list[int]) -> dict[int, str] | str:
        self.batches.append(keys)
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        if self.fail:
            raise self.fail
        if self.answer is not None:
            return self.answer
        return {key: f"row {key}" for key in keys if key % 2 == 0}


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_reads_arriving_while_two_are_out_go_in_one_statement() -> None:
    async def run() -> tuple[list[object], list[list[int]]]:
        store = Store()
        reads = Coalescer(store.fetch, limit=2)
        first = [asyncio.ensure_future(reads.one(key)) for key in (0, 1)]
        await settle()
        assert store.batches == [[0], [1]]  # sent at once, each alone
        later = [asyncio.ensure_future(reads.one(key)) for key in (2, 3, 4, 2)]
        await settle()
        assert len(store.batches) == 2  # both out: the others wait
        store.gates[0].set()
        await settle()
        assert store.batches[2] == [2, 3, 4]  # together, each key once
        for gate in store.gates:
            gate.set()
        return await asyncio.gather(*first, *later), store.batches

    answers, batches = asyncio.run(run())
    assert answers == ["row 0", None, "row 2", None, "row 4", "row 2"]
    assert len(batches) == 3


def test_a_failed_statement_fails_its_batch_only() -> None:
    async def run() -> tuple[list[object], object]:
        store = Store()
        reads = Coalescer(store.fetch, limit=1)
        first = asyncio.ensure_future(reads.one(0))
        await settle()
        later = [asyncio.ensure_future(reads.one(key)) for key in (2, 4)]
        await settle()
        store.fail = RuntimeError("down")
        store.gates[0].set()
        outcome = await asyncio.gather(first, return_exceptions=True)
        store.fail = None
        await settle()
        store.gates[1].set()
        return outcome, await asyncio.gather(*later)

    (failed,), later = asyncio.run(run())
    assert isinstance(failed, RuntimeError)
    assert later == ["row 2", "row 4"]


def test_a_caller_that_goes_away_takes_no_other_read_with_it() -> None:
    async def run() -> list[object]:
        store = Store()
        reads = Coalescer(store.fetch, limit=1)
        first = asyncio.ensure_future(reads.one(0))
        await settle()
        gone, stays = asyncio.ensure_future(reads.one(2)), asyncio.ensure_future(reads.one(4))
        await settle()
        first.cancel()
        store.gates[0].set()
        await settle()
        gone.cancel()
        await settle()
        store.gates[1].set()
        return [await stays, gone.cancelled(), first.cancelled()]

    assert asyncio.run(run()) == ["row 4", True, True]


@pytest.mark.parametrize("answer", ["on_thread"])
def test_an_answer_instead_of_rows_goes_to_every_read_of_the_batch(answer: str) -> None:
    async def run() -> list[object]:
        store = Store(answer)
        reads = Coalescer(store.fetch, limit=1)
        pending = [asyncio.ensure_future(reads.one(key)) for key in (1, 2)]
        await settle()
        for _ in range(2):
            for gate in store.gates:
                gate.set()
            await settle()
        return await asyncio.gather(*pending)

    assert asyncio.run(run()) == [answer, answer]
