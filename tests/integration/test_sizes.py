"""Every aspect ratio of the contract renders, through the whole service, to exactly the
table's pixels at 1K.

The 2K sizes take the same path with other numbers (the queue stores the table's pixels for
each: tests/unit/test_size_table.py; the engine refuses a size the pipeline would round and
checks what it decoded against what was asked) and cost several times a 1K image on a CPU,
so one is rendered, and its pixels checked, by the batching test that runs 2K images anyway
(tests/integration/test_batching.py)."""

from __future__ import annotations

import pytest

from kreaserve import contract
from tests.conftest import Server
from tests.integration.test_generation import GOOD, fetch_image, wait_until_done

RENDERED = [(size, "1K") for size in contract.SIZES]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_every_aspect_ratio_renders_to_the_tables_pixels(full_server: Server) -> None:
    with full_server.client(full_server.key(credits=100)) as client:
        tasks = {
            combo: client.post(
                "/v1/images/generations",
                json={**GOOD, "size": combo[0], "quality": combo[1], "seed": 11},
            ).json()["id"]
            for combo in RENDERED
        }
        sizes = {}
        for combo, task_id in tasks.items():
            done = wait_until_done(client, task_id, timeout=600)[-1]
            assert done["status"] == "completed", (combo, done)
            sizes[combo] = fetch_image(done["results"][0]).size
    assert sizes == {combo: contract.PIXELS[combo] for combo in RENDERED}
