"""The OpenAI images API's request, mapped onto the contract's: `WxH` sizes to the nearest
ratio and tier of the size table, `n`, `response_format`, and OpenAI's answer shape.

Plain data and pydantic only, so the mapping is tested without a server; the route is
kreaserve/api/routes/openai.py.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kreaserve import contract

#: A `WxH` size is refused when its ratio is further than this (10 %) from every ratio of
#: the contract's table: 3x1 has no near ratio, 1792x1024 (1.75) is 16:9 (1.78).
MAX_RATIO_ERROR = math.log(1.10)
MIN_SIDE, MAX_SIDE = 64, 4096
_SIZE = re.compile(r"^(\d{1,5})[xX](\d{1,5})$")
#: OpenAI `quality` values that ask for the larger tier when no size says which.
HIGH_QUALITY = frozenset({"hd", "high"})


class SizeError(ValueError):
    """The size names no ratio and tier of the table."""


class ImagesRequest(BaseModel):
    """The body of OpenAI's `POST /v1/images/generations`; fields of other OpenAI models
    (`background`, `moderation`, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    prompt: Any = None
    model: Any = contract.MODEL
    n: int = Field(default=1, ge=1, le=4, strict=True)
    size: str | None = None
    quality: str | None = None
    response_format: Literal["url", "b64_json"] = "url"
    output_format: str = "png"
    #: OpenAI's name for the JPEG/WebP quality, 0-100 (the contract's output_quality).
    output_compression: int | None = Field(default=None, ge=0, le=100, strict=True)
    style: str | None = None
    user: str | None = None


def map_size(size: str | None, quality: str | None) -> tuple[str, str]:
    """(ratio, tier) of the table nearest to `size` (`WxH`); with no size (or `auto`),
    1:1, and the 2K tier when `quality` is `hd` or `high`. Raises SizeError."""
    if size is None or size == "auto":
        return "1:1", "2K" if (quality or "").lower() in HIGH_QUALITY else "1K"
    match = _SIZE.match(size.strip())
    if not match:
        raise SizeError(f"size must be WIDTHxHEIGHT in pixels (such as 1024x1024), not {size!r}")
    width, height = int(match[1]), int(match[2])
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise SizeError(f"size: width and height must be from {MIN_SIDE} to {MAX_SIDE} pixels")

    def ratio_error(ratio: str) -> float:
        across, down = (int(part) for part in ratio.split(":"))
        return abs(math.log(width / height) - math.log(across / down))

    ratio = min(contract.SIZES, key=ratio_error)
    if ratio_error(ratio) > MAX_RATIO_ERROR:
        raise SizeError(
            f"size {width}x{height} is no supported aspect ratio; use one near "
            + ", ".join(contract.SIZES)
        )

    def area_error(tier: str) -> float:
        w, h = contract.PIXELS[(ratio, tier)]
        return abs(math.log(width * height) - math.log(w * h))

    return ratio, min(contract.QUALITIES, key=area_error)


def models_answer(created: int) -> dict[str, Any]:
    """`GET /openai/v1/models`: the models this server runs."""
    return {
        "object": "list",
        "data": [
            {"id": model, "object": "model", "created": created, "owned_by": "kreaserve"}
            for model in contract.MODELS
        ],
    }
