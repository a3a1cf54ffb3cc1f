"""Every size x quality of the contract yields an image of exactly the table's pixels.

Generates all 22 images (the 2K ones take ~10 s each here), once, on SQLite."""

from __future__ import annotations

import pytest

from kreaserve import contract
from tests.conftest import Server
from tests.integration.test_generation import GOOD, fetch_image, wait_until_done


@pytest.mark.slow
# 311-322 s on CI with 3 other workers beside it; past 600 s once when it started first,
# beside the cold first builds of the shared caches.
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_every_size_and_quality_has_the_tables_pixels(full_server: Server) -> None:
    with full_server.client(full_server.key(credits=100)) as client:
        tasks = {
            (size, quality): client.post(
                "/v1/images/generations",
                json={**GOOD, "size": size, "quality": quality, "seed": 11},
            ).json()["id"]
            for (size, quality) in contract.PIXELS
        }
        sizes = {}
        for combo, task_id in tasks.items():
            done = wait_until_done(client, task_id, timeout=600)[-1]
            assert done["status"] == "completed", (combo, done)
            sizes[combo] = fetch_image(done["results"][0]).size
    assert sizes == contract.PIXELS
