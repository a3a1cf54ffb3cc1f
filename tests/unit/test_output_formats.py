"""Output formats without a server: the encoder's bytes per format and quality, the names
and media types of stored results, and a task's format carried from the task table through
the worker to the engine and into its result key (a fake engine, SQLite)."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageDraw

from kreaserve import contract, images, task_queue
from kreaserve.db import Database
from kreaserve.storage import LocalStorage, result_key
from tests.conftest import new_account
from tests.unit.fake_engine import FakeEngine
from tests.unit.test_worker_loop import (  # noqa: F401 - fixtures used by name
    PRICE,
    db,
    migrated,
    quick_heartbeat,
    sqlite_url,
    start_worker,
    storage,
    wait_status,
    worker_db,
)


def picture() -> Image.Image:
    image = Image.linear_gradient("L").convert("RGB").resize((320, 240))
    ImageDraw.Draw(image).ellipse((40, 40, 200, 200), fill=(200, 40, 40))
    return image


@pytest.mark.parametrize(("fmt", "pil_name"), [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_each_format_encodes_to_a_file_of_that_format(fmt: str, pil_name: str) -> None:
    decoded = Image.open(io.BytesIO(images.encode(picture(), fmt)))
    assert decoded.format == pil_name and decoded.size == (320, 240)


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_a_lower_quality_makes_a_smaller_lossy_file(fmt: str) -> None:
    assert len(images.encode(picture(), fmt, 10)) < len(images.encode(picture(), fmt, 95))


def test_png_is_lossless_whatever_the_quality() -> None:
    source = picture()
    for quality in (1, 100):
        decoded = Image.open(io.BytesIO(images.encode(source, "png", quality)))
        assert decoded.tobytes() == source.tobytes()


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="gif"):
        images.encode(picture(), "gif")


def test_result_keys_and_media_types_follow_the_format() -> None:
    keys = {fmt: result_key("task-unified-1-abcdefgh", 2, fmt=fmt) for fmt in images.FORMATS}
    assert keys == {
        "png": "task-unified-1-abcdefgh/2-0.png",
        "jpeg": "task-unified-1-abcdefgh/2-0.jpg",
        "webp": "task-unified-1-abcdefgh/2-0.webp",
    }
    assert [images.media_type_of(k) for k in keys.values()] == [
        "image/png",
        "image/jpeg",
        "image/webp",
    ]
    assert images.media_type_of("old/0.png") == "image/png"


def test_a_tasks_format_reaches_the_engine_and_names_its_result(
    db: Database,  # noqa: F811
    storage: LocalStorage,  # noqa: F811
    start_worker,  # noqa: F811
) -> None:
    account_id, _ = new_account(db)
    params = task_queue.NewTask(
        prompt="a fox",
        size="1:1",
        quality="1K",
        seed=5,
        nsfw_check=False,
        callback_url=None,
        output_format="webp",
        output_quality=42,
    )
    task_id = task_queue.create(db, account_id, None, "default", params, PRICE).id
    run = start_worker(FakeEngine())
    task = wait_status(db, task_id, contract.COMPLETED)
    [item] = run.engine.batches[0].items
    assert (item.output_format, item.output_quality) == ("webp", 42)
    [key] = task.result_keys
    assert key.endswith("-0.webp") and storage.path(key).read_bytes() == run.engine.png
