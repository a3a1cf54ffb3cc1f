"""Output image formats: one place for the names, file extensions, media types and the encoder.

A leaf (it imports nothing of kreaserve) so the engine child, which encodes, the worker,
which stores, and the API, which validates and serves, all agree on them.
"""

from __future__ import annotations

import io
from typing import Any

#: `output_format` values, the first the default.
FORMATS = ("png", "jpeg", "webp")
DEFAULT_FORMAT = "png"
#: `output_quality` when none is given: JPEG's and WebP's visually lossless range (PNG is
#: lossless and ignores it).
DEFAULT_QUALITY = 90
QUALITY_MIN, QUALITY_MAX = 1, 100

EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_BY_EXTENSION = {ext: fmt for fmt, ext in EXTENSIONS.items()}


def encode(image: Any, fmt: str = DEFAULT_FORMAT, quality: int = DEFAULT_QUALITY) -> bytes:
    """The bytes of a PIL image in `fmt`; `quality` (1-100) is JPEG's and WebP's, PNG ignores it.

    PNG uses zlib's fastest level (the noise of random weights is big and slow to squeeze);
    WebP uses method 0, libwebp's fastest: about 3 times faster than its default (4) for
    files under 10 % bigger (BENCHMARKS.md, "Output formats")."""
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG", compress_level=1)
    elif fmt == "jpeg":
        image.save(buffer, format="JPEG", quality=quality)
    elif fmt == "webp":
        image.save(buffer, format="WEBP", quality=quality, method=0)
    else:
        raise ValueError(f"unknown output format {fmt!r}")
    return buffer.getvalue()


def extension(fmt: str) -> str:
    """The file extension (no dot) of a format."""
    return EXTENSIONS[fmt]


def media_type_of(name: str) -> str:
    """The Content-Type of a stored result, from its name's extension (PNG when unknown:
    results stored before formats existed are PNGs)."""
    fmt = _BY_EXTENSION.get(name.rsplit(".", 1)[-1].lower(), DEFAULT_FORMAT)
    return MEDIA_TYPES[fmt]
