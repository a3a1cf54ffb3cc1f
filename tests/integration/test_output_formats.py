"""`output_format` and `output_quality` end to end through a generating server (SQLite with
the embedded worker; PostgreSQL with a separate worker): the file behind the result URL is
a PNG, JPEG or WebP of the task's pixels, named and served as one, and the quality reaches
the encoder. (Bad values are in test_api_contract.py's table; S3's Content-Type in
test_s3_service.py.)"""

from __future__ import annotations

import io
from urllib.parse import urlsplit

import httpx
from PIL import Image

from tests.conftest import Server
from tests.integration.test_generation import GOOD, wait_until_done

#: The smallest 1K pixel count of the contract, so every task is cheap.
SMALL = {**GOOD, "size": "4:3", "seed": 11}
#: format -> (magic bytes at the start, where they start, extension, Content-Type)
EXPECTED = {
    "png": (b"\x89PNG\r\n\x1a\n", 0, ".png", "image/png"),
    "jpeg": (b"\xff\xd8\xff", 0, ".jpg", "image/jpeg"),
    "webp": (b"WEBP", 8, ".webp", "image/webp"),
}


def test_each_format_is_stored_named_and_served_as_itself(full_server: Server) -> None:
    _, key = full_server.account(credits=10)
    bodies = {
        "default": SMALL,  # png (PNG ignores a quality: tests/unit)
        "jpeg": {**SMALL, "output_format": "jpeg"},
        "jpeg-5": {**SMALL, "output_format": "jpeg", "output_quality": 5},
        "webp": {**SMALL, "output_format": "webp", "output_quality": 80},
    }
    with full_server.client(key) as client:
        # Created together, so the same-size tasks may share a batch: each keeps its format.
        ids = {
            name: client.post("/v1/images/generations", json=body).json()["id"]
            for name, body in bodies.items()
        }
        finals = {name: wait_until_done(client, task_id)[-1] for name, task_id in ids.items()}
    files: dict[str, bytes] = {}
    for name, final in finals.items():
        assert final["status"] == "completed", (name, final)
        fmt = name.split("-")[0].replace("default", "png")
        magic, at, extension, media_type = EXPECTED[fmt]
        [url] = final["results"]
        assert urlsplit(url).path.endswith(extension), url
        response = httpx.get(url, timeout=30)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == media_type
        assert response.content[at : at + len(magic)] == magic, response.content[:16]
        image = Image.open(io.BytesIO(response.content))
        assert image.format == fmt.upper() and image.size == (1152, 896)
        files[name] = response.content
    assert len(files["jpeg-5"]) < len(files["jpeg"]) / 2, (len(files["jpeg-5"]), len(files["jpeg"]))
